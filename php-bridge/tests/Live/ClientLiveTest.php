<?php

declare(strict_types=1);

namespace Flagport\Tests\Live;

use Flagport\Bucketing;
use Flagport\CircuitBreaker;
use Flagport\Client;
use Flagport\Store\ApcuStore;

/** The client against a real Flagport server over TCP and a Unix socket, and against bad peers. */
final class ClientLiveTest extends LiveTestCase
{
    private const ROLLOUTS = ['rollout-p10' => 10, 'rollout-p25' => 25, 'rollout-p50' => 50];

    public function testTcpAndUnixSocketMatchBucketing(): void
    {
        $tcp = $this->client(self::env('FLAGPORT_TEST_URL'));
        $uds = $this->client(self::env('FLAGPORT_TEST_UDS_URL'));
        self::assertStringStartsWith('unix:///', self::env('FLAGPORT_TEST_UDS_URL'));
        for ($i = 0; $i < 300; $i++) {
            $context = ['targetingKey' => "live-$i", 'company_id' => $i % 7];
            $values = $tcp->all($context);
            self::assertSame($values, $uds->all($context));
            foreach (self::ROLLOUTS as $key => $percentage) {
                self::assertSame(Bucketing::included($key, "live-$i", $percentage), $values[$key], "$key for live-$i");
                self::assertSame($values[$key], $tcp->isEnabled($key, $context));
            }
        }
        self::assertSame(300, $tcp->status()['calls'], 'one bulk call per context');
        // Same context, same snapshot version: the TCP client's cached ETag revalidates over the socket.
        self::assertContains($uds->status()['source'], [Client::SOURCE_SERVER, Client::SOURCE_NOT_MODIFIED]);
        self::assertSame([], $this->logged);
    }

    public function testIntegerTargetingKeyAndPortalFlags(): void
    {
        $client = $this->client(self::env('FLAGPORT_TEST_UDS_URL'));
        self::assertSame($client->all(['targetingKey' => '42']), $client->all(['targetingKey' => 42]));
        self::assertSame(1, $client->status()['calls']);
        self::assertFalse($client->isEnabled('auth-improvements', ['targetingKey' => '42'], true));
        self::assertSame('DISABLED', $client->details('auth-improvements', ['targetingKey' => '42'])['reason'] ?? null);
        self::assertNull($client->value('no-such-flag', null, ['targetingKey' => '42']));
    }

    public function testRevalidatesWithEtag(): void
    {
        $client = $this->client(self::env('FLAGPORT_TEST_URL'));
        $first = $client->all(['targetingKey' => 'etag-user']);
        $client->reset();
        self::assertSame($first, $client->all(['targetingKey' => 'etag-user']));
        self::assertSame(Client::SOURCE_NOT_MODIFIED, $client->status()['source']);
    }

    public function testHungServerCostsOneTimeoutThenNothing(): void
    {
        $client = $this->client(self::env('FLAGPORT_TEST_HUNG_URL'), [
            'timeout_ms' => 100, 'breaker_threshold' => 2, 'breaker_cooldown' => 30.0,
            'defaults' => ['ui-improvements' => true],
        ]);
        for ($i = 0; $i < 2; $i++) {
            $started = hrtime(true);
            self::assertTrue($client->isEnabled('ui-improvements', ['targetingKey' => "h$i"]));
            $elapsedMs = (hrtime(true) - $started) / 1e6;
            self::assertGreaterThanOrEqual(90, $elapsedMs);
            self::assertLessThan(600, $elapsedMs);
        }
        self::assertSame(CircuitBreaker::OPEN, $client->status()['circuit']);
        $started = hrtime(true);
        for ($i = 0; $i < 100; $i++) {
            self::assertSame('d', $client->value('x', 'd', ['targetingKey' => "o$i"]));
        }
        self::assertLessThan(20, (hrtime(true) - $started) / 1e6, '100 calls with the circuit open');
        self::assertSame(2, $client->status()['calls']);
        self::assertCount(1, $this->logged);
        self::assertStringContainsString('timed out', $this->logged[0]);
    }

    public function testGarbageAndDeadPeersServeLastGood(): void
    {
        $good = $this->client(self::env('FLAGPORT_TEST_URL'), ['cache_prefix' => 'shared-lg']);
        $known = $good->all(['targetingKey' => 'lg-user']);
        self::assertNotSame([], $known);
        $urls = [
            self::env('FLAGPORT_TEST_GARBAGE_URL'),
            self::env('FLAGPORT_TEST_GARBAGE_HTTP_URL'),
            self::env('FLAGPORT_TEST_DEAD_URL'),
            self::env('FLAGPORT_TEST_DEAD_UDS_URL'),
        ];
        foreach ($urls as $url) {
            $bad = $this->client($url, ['cache_prefix' => 'shared-lg']);
            $started = hrtime(true);
            self::assertSame($known, $bad->all(['targetingKey' => 'lg-user']), $url);
            self::assertLessThan(200, (hrtime(true) - $started) / 1e6, $url);
            self::assertSame(Client::SOURCE_LAST_GOOD, $bad->status()['source'], $url);
            self::assertSame([], $bad->all(['targetingKey' => 'never-seen']), $url);
        }
        self::assertCount(4, $this->logged, 'one log line per endpoint per cool-down');
    }

    public function testApcuStoreWhenEnabled(): void
    {
        if (!ApcuStore::available()) {
            self::markTestSkipped('APCu is not enabled in this SAPI (php -d apc.enable_cli=1)');
        }
        $store = new ApcuStore();
        $store->deletePrefix('t:');
        self::assertTrue($store->add('t:a', ['x' => 1], 10));
        self::assertFalse($store->add('t:a', 2, 10));
        self::assertSame(['x' => 1], $store->fetch('t:a'));
        self::assertSame(1, $store->increment('t:n', 10));
        self::assertSame(2, $store->increment('t:n', 10));
        $store->deletePrefix('t:');
        self::assertNull($store->fetch('t:a'));
        self::assertNull($store->fetch('t:n'));
    }
}
