<?php

declare(strict_types=1);

namespace Flagport\Tests;

use Flagport\Bucketing;
use PHPUnit\Framework\TestCase;

/** The shared vectors (tests/spec/bucketing-vectors.json) that the Python engine checks too. */
final class BucketingTest extends TestCase
{
    /** @return array<string, mixed> */
    private static function data(): array
    {
        $path = dirname(__DIR__, 2) . '/tests/spec/bucketing-vectors.json';
        self::assertFileExists($path);
        return json_decode((string) file_get_contents($path), true, 512, JSON_THROW_ON_ERROR);
    }

    public function testEveryVector(): void
    {
        $data = self::data();
        self::assertSame(1, $data['bucketing']);
        self::assertGreaterThanOrEqual(2000, count($data['vectors']));
        $failures = [];
        $ints = 0;
        foreach ($data['vectors'] as $i => $v) {
            self::assertTrue(is_string($v['unit']) || is_int($v['unit']), "vector $i unit type");
            $ints += is_int($v['unit']) ? 1 : 0;
            $hash = Bucketing::hash($v['salt'], $v['unit'], $v['seed']);
            $bucket = Bucketing::bucket($v['salt'], $v['unit'], $v['seed']);
            if ($hash !== $v['hash'] || $bucket !== $v['bucket']) {
                $failures[] = sprintf('#%d %s:%s seed %d: got %d/%d, want %d/%d', $i, $v['salt'],
                    $v['unit'], $v['seed'], $hash, $bucket, $v['hash'], $v['bucket']);
            }
        }
        self::assertSame([], array_slice($failures, 0, 5), count($failures) . ' vectors disagree');
        self::assertGreaterThan(0, $ints, 'integer units are covered');
    }

    public function testRawKnownValues(): void
    {
        $raw = self::data()['raw'];
        self::assertCount(3, $raw);
        foreach ($raw as $r) {
            self::assertSame($r['hash'], Bucketing::raw($r['input'], $r['seed']), $r['input']);
            self::assertSame($r['bucket'], (Bucketing::raw($r['input'], $r['seed']) * 100000) >> 32);
        }
        self::assertSame(0, Bucketing::raw('ejOoVL'));
        self::assertSame(2147483648, Bucketing::raw('6LvT0'));
        self::assertSame(4294967295, Bucketing::raw('ceQdGm'));
    }

    public function testUnleashPublishedCase(): void
    {
        self::assertSame(23, Bucketing::hash('AB12A', '122') % 100 + 1);
        self::assertSame(23, Bucketing::hash('AB12A', 122) % 100 + 1);
    }

    public function testBucketRange(): void
    {
        self::assertSame(99999, Bucketing::bucket('ui-improvements', 'u116960'));
        self::assertSame(0, Bucketing::bucket('ui-improvements', 'u41308'));
    }
}
