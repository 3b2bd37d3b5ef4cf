<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\Bucketing;
use PHPUnit\Framework\TestCase;

/** Bucketing spec v1 against the vectors the Python engine checks too. */
final class BucketingTest extends TestCase
{
    /** @return array<string, mixed> */
    private static function data(): array
    {
        $file = __DIR__ . '/../../../tests/spec/bucketing-vectors.json';
        $data = json_decode((string) file_get_contents($file), true, 512, JSON_THROW_ON_ERROR);
        self::assertIsArray($data);
        return $data;
    }

    public function testEveryVector(): void
    {
        $data = self::data();
        self::assertSame(Bucketing::VERSION, $data['bucketing']);
        self::assertGreaterThanOrEqual(2000, count($data['vectors']));
        $failures = [];
        $integers = 0;
        foreach ($data['vectors'] as $v) {
            $integers += is_int($v['unit']) ? 1 : 0;
            $got = [Bucketing::hash($v['salt'], $v['unit'], $v['seed']), Bucketing::bucket($v['salt'], $v['unit'], $v['seed'])];
            if ($got !== [$v['hash'], $v['bucket']]) {
                $failures[] = json_encode([$v, $got], JSON_UNESCAPED_UNICODE);
            }
        }
        self::assertSame([], array_slice($failures, 0, 3), count($failures) . ' vectors disagree');
        self::assertGreaterThanOrEqual(40, $integers);
    }

    public function testRawKnownValues(): void
    {
        $raw = self::data()['raw'];
        $hashes = [];
        foreach ($raw as $r) {
            $word = unpack('N', hash('murmur3a', $r['input'], true, ['seed' => $r['seed']]));
            $hashes[$r['input']] = $word[1];
            self::assertSame($r['bucket'], ($word[1] * Bucketing::BUCKETS) >> 32);
        }
        self::assertSame(['ejOoVL' => 0, '6LvT0' => 2 ** 31, 'ceQdGm' => 2 ** 32 - 1], $hashes);
    }

    public function testUnleashPublishedCase(): void
    {
        self::assertSame(23, Bucketing::hash('AB12A', '122') % 100 + 1);
        self::assertSame(23, Bucketing::hash('AB12A', 122) % 100 + 1);
    }

    public function testExtremes(): void
    {
        self::assertSame(99999, Bucketing::bucket('ui-improvements', 'u116960'));
        self::assertSame(0, Bucketing::bucket('ui-improvements', 'u41308'));
    }

    public function testIncludedIsMonotoneAndExact(): void
    {
        self::assertTrue(Bucketing::included('f', '', 100));
        self::assertFalse(Bucketing::included('f', 'x', 0));
        $counts = [10 => 0, 25 => 0, 50 => 0];
        for ($i = 0; $i < 20000; $i++) {
            $previous = false;
            foreach ([10, 25, 50] as $p) {
                $in = Bucketing::included('rollout', "user-$i", $p);
                self::assertTrue($in || !$previous, 'raising the percentage only adds units');
                $previous = $in;
                $counts[$p] += $in ? 1 : 0;
            }
        }
        foreach ($counts as $p => $n) {
            self::assertEqualsWithDelta($p / 100, $n / 20000, 0.015);
        }
        // Threshold is round(p * 1000): bucket 0 is in at 0.001 %.
        self::assertTrue(Bucketing::included('ui-improvements', 'u41308', 0.001));
    }

    public function testVariantWalkUsesSeedOne(): void
    {
        $weights = ['a' => 1, 'b' => 1];
        $point = (Bucketing::hash('s', 'u', 1) * 2) >> 32;
        self::assertSame($point === 0 ? 'a' : 'b', Bucketing::variant('s', 'u', $weights));
        self::assertNull(Bucketing::variant('s', 'u', ['a' => 0]));
        self::assertSame('only', Bucketing::variant('s', 'u', ['zero' => 0, 'only' => 2147483647]));
    }
}
