<?php

declare(strict_types=1);

namespace Flagport\Tests\Live;

use Flagport\Client;
use Flagport\CurlTransport;
use Flagport\Store\MemoryStore;
use PHPUnit\Framework\TestCase;

/**
 * Tests against real endpoints the Python harness (tests/php/test_php_bridge.py) starts and
 * names in FLAGPORT_TEST_* variables; skipped when run alone.
 */
abstract class LiveTestCase extends TestCase
{
    /** @var list<string> */
    protected array $logged = [];

    protected function setUp(): void
    {
        MemoryStore::flush();
        CurlTransport::closeAll();
        $this->logged = [];
    }

    protected static function env(string $name): string
    {
        $value = getenv($name);
        if (!is_string($value) || $value === '') {
            self::markTestSkipped("$name is not set (run through tests/php/test_php_bridge.py)");
        }
        return $value;
    }

    /** @param array<string, mixed> $options */
    protected function client(string $url, array $options = []): Client
    {
        $logger = function (string $message): void {
            $this->logged[] = $message;
        };
        return new Client($options + ['url' => $url, 'cache_prefix' => 'live-' . $this->getName()], null, new MemoryStore(), null, $logger);
    }
}
