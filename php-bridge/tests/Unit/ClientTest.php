<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\CircuitBreaker;
use Flagport\Client;
use Flagport\CurlTransport;
use Flagport\HttpResponse;
use Flagport\SocketTransport;
use Flagport\Store\MemoryStore;
use Flagport\TransportException;
use PHPUnit\Framework\TestCase;

/** The client's contract with a scripted transport: memoization, fail-safe, breaker, cache. */
final class ClientTest extends TestCase
{
    /** @var list<string> */
    private array $logged = [];

    protected function setUp(): void
    {
        MemoryStore::flush();
        $this->logged = [];
    }

    /** @param array<string, mixed> $options */
    private function client(FakeTransport $transport, array $options = [], ?callable $resolver = null): Client
    {
        $logger = function (string $message): void {
            $this->logged[] = $message;
        };
        return new Client($options + ['url' => 'http://fake'], $resolver, new MemoryStore(), $transport, $logger);
    }

    public function testOptionsLeftOutOrNullTakeTheOneListOfDefaults(): void
    {
        self::assertSame(Client::DEFAULT_OPTIONS, Client::options([]));
        $options = Client::options(['timeout_ms' => null, 'url' => 'unix:///run/f.sock', 'cache' => false]);
        self::assertSame(Client::DEFAULT_OPTIONS['timeout_ms'], $options['timeout_ms']);
        self::assertSame('unix:///run/f.sock', $options['url']);
        self::assertFalse($options['cache'], 'false is a value, not "left out"');
        self::assertSame(array_keys(Client::DEFAULT_OPTIONS), array_keys($options));
    }

    public function testTransportFollowsTheUrlAndTheOption(): void
    {
        self::assertInstanceOf(SocketTransport::class, SocketTransport::forUrl('unix:///run/f.sock', 'auto', 50, 250, null));
        self::assertInstanceOf(CurlTransport::class, SocketTransport::forUrl('unix:///run/f.sock', 'curl', 50, 250, null));
        self::assertInstanceOf(CurlTransport::class, SocketTransport::forUrl('http://127.0.0.1:8787', 'auto', 50, 250, null));
        self::assertInstanceOf(CurlTransport::class, SocketTransport::forUrl('https://flags.example', 'auto', 50, 250, 't'));
        // A misspelt option is named in the log and the client still works (over curl).
        $logger = function (string $message): void {
            $this->logged[] = $message;
        };
        $client = new Client(['url' => 'unix:///nonexistent/f.sock', 'transport' => 'socket'], null, new MemoryStore(), null, $logger);
        self::assertSame(["flagport: the transport option must be 'auto' or 'curl', got 'socket'; using curl"], $this->logged);
        self::assertTrue($client->isEnabled('a', ['targetingKey' => '1'], true));
        self::assertStringContainsString('(curl 7)', (string) $client->status()['error']);
    }

    public function testOneBulkCallPerContextPerRequest(): void
    {
        $transport = new FakeTransport([FakeTransport::bulk(['a' => true, 'b' => false]), FakeTransport::bulk(['a' => false])]);
        $client = $this->client($transport);
        $context = ['targetingKey' => '42', 'company_id' => 7];
        self::assertTrue($client->isEnabled('a', $context));
        self::assertFalse($client->isEnabled('b', $context));
        self::assertSame(['a' => true, 'b' => false], $client->all($context));
        self::assertCount(1, $transport->requests);
        self::assertSame('POST', $transport->requests[0]['method']);
        self::assertSame('/ofrep/v1/evaluate/flags', $transport->requests[0]['path']);
        self::assertFalse($client->isEnabled('a', ['targetingKey' => '43']));
        self::assertCount(2, $transport->requests);
        $client->reset();
        $client->isEnabled('a', $context);
        self::assertCount(3, $transport->requests);
    }

    public function testEachContextGetsItsOwnAnswersWhateverTheOrderOfQuestions(): void
    {
        $transport = new FakeTransport([
            FakeTransport::bulk(['a' => true]),
            FakeTransport::bulk(['a' => false]),
            FakeTransport::bulk(['a' => false]),
        ]);
        $client = $this->client($transport);
        $first = ['targetingKey' => '42', 'company_id' => 7];
        self::assertTrue($client->isEnabled('a', $first));
        self::assertFalse($client->isEnabled('a', ['targetingKey' => '42', 'company_id' => '7']));
        // Back to the first context: its own answers, without another call.
        self::assertTrue($client->isEnabled('a', $first));
        self::assertTrue($client->isEnabled('a', ['targetingKey' => '42', 'company_id' => 7]));
        self::assertCount(2, $transport->requests);
        // The same attributes in another order are another body, so another question.
        self::assertFalse($client->isEnabled('a', ['company_id' => 7, 'targetingKey' => '42']));
        self::assertCount(3, $transport->requests);
        self::assertTrue($client->isEnabled('a', $first));
        self::assertCount(3, $transport->requests);
    }

    public function testContextEncoding(): void
    {
        $transport = new FakeTransport([FakeTransport::bulk([]), FakeTransport::bulk([]), FakeTransport::bulk([])]);
        $client = $this->client($transport);
        $client->all(['targetingKey' => 42, 'company_id' => 7, 'score' => 1.0, 'role' => 'admin', 'path' => '/a/b']);
        self::assertSame(
            '{"context":{"targetingKey":"42","company_id":7,"score":1.0,"role":"admin","path":"/a/b"}}',
            $transport->requests[0]['body'],
        );
        $client->all([]);
        self::assertSame('{"context":{"targetingKey":""}}', $transport->requests[1]['body']);
        $resolved = $this->client($transport, [], static fn (): array => ['targetingKey' => 'session-abc', 'team' => 3]);
        $resolved->all();
        self::assertSame('{"context":{"targetingKey":"session-abc","team":3}}', $transport->requests[2]['body']);
    }

    public function testValueKeepsTypesAndErrorsUseDefaults(): void
    {
        $body = json_encode(['flags' => [
            ['key' => 'int', 'value' => 3, 'variant' => 'three', 'reason' => 'STATIC'],
            ['key' => 'float', 'value' => 1.0, 'variant' => 'one', 'reason' => 'STATIC'],
            ['key' => 'obj', 'value' => ['x' => 1], 'variant' => 'v', 'reason' => 'STATIC'],
            ['key' => 'needs-unit', 'errorCode' => 'TARGETING_KEY_MISSING', 'errorDetails' => 'no unit'],
            ['key' => 'str-off', 'value' => 'legacy', 'variant' => 'off', 'reason' => 'SPLIT', 'metadata' => ['on' => false]],
            ['key' => 'str-on', 'value' => 'new', 'variant' => 'on', 'reason' => 'SPLIT', 'metadata' => ['on' => true]],
            ['key' => 'gated', 'value' => 'x', 'variant' => 'v', 'reason' => 'DISABLED', 'metadata' => ['gatedBy' => 'p', 'on' => false]],
        ]], JSON_PRESERVE_ZERO_FRACTION);
        $client = $this->client(new FakeTransport([new HttpResponse(200, (string) $body)]), ['defaults' => ['needs-unit' => 'cfg']]);
        self::assertSame(3, $client->value('int'));
        self::assertSame(1.0, $client->value('float'));
        self::assertSame(['x' => 1], $client->value('obj'));
        self::assertSame('cfg', $client->value('needs-unit', 'call'));
        self::assertSame('call', $client->value('unknown', 'call'));
        self::assertTrue($client->isEnabled('needs-unit'), 'configured default "cfg" is truthy');
        self::assertTrue($client->isEnabled('unknown', null, true));
        self::assertFalse($client->isEnabled('str-off', null, true));
        self::assertTrue($client->isEnabled('str-on'));
        self::assertFalse($client->isEnabled('gated', null, true));
        self::assertSame('TARGETING_KEY_MISSING', $client->details('needs-unit')['errorCode'] ?? null);
    }

    public function testOnFollowsTheFlagsOwnOffVariant(): void
    {
        $body = json_encode(['flags' => [
            ['key' => 'control', 'value' => 'A', 'variant' => 'control', 'reason' => 'SPLIT', 'metadata' => ['on' => false]],
            ['key' => 'treatment', 'value' => 'B', 'variant' => 'treatment', 'reason' => 'SPLIT', 'metadata' => ['on' => true]],
            ['key' => 'named-off', 'value' => 'legacy', 'variant' => 'off', 'reason' => 'STATIC', 'metadata' => ['on' => true]],
            ['key' => 'false-but-on', 'value' => false, 'variant' => 'dark', 'reason' => 'STATIC', 'metadata' => ['on' => true]],
            ['key' => 'plain', 'value' => true, 'variant' => 'on', 'reason' => 'STATIC'],
            ['key' => 'plain-gated', 'value' => false, 'variant' => 'off', 'reason' => 'SPLIT', 'metadata' => ['gatedBy' => 'p']],
            ['key' => 'unsaid', 'value' => 'x', 'variant' => 'v', 'reason' => 'STATIC'],
        ]]);
        $client = $this->client(new FakeTransport([new HttpResponse(200, (string) $body)]));
        self::assertFalse($client->isEnabled('control', null, true), 'control is the off variant');
        self::assertTrue($client->isEnabled('treatment'));
        self::assertTrue($client->isEnabled('named-off'), 'a variant named off that is not the off variant');
        self::assertTrue($client->isEnabled('false-but-on'));
        self::assertTrue($client->isEnabled('plain'));
        self::assertFalse($client->isEnabled('plain-gated', null, true));
        // A server that sends no metadata.on for a value that is not a boolean: the default.
        self::assertFalse($client->isEnabled('unsaid'));
        self::assertTrue($client->isEnabled('unsaid', null, true));
        self::assertSame('A', $client->value('control'));
        self::assertSame('control', $client->details('control')['variant'] ?? null);
        self::assertSame([], $this->logged);
    }

    public function testCacheEntryOfAnOlderLayoutIsAMiss(): void
    {
        $context = ['targetingKey' => 'u'];
        // The layout before named keys: key => [value, variant, reason, errorCode, gated].
        (new MemoryStore())->store('flagport:lg:' . hash('xxh128', '{"targetingKey":"u"}'), [
            'flags' => ['a' => [true, 'on', 'STATIC', null, false]], 'etag' => '"1-x"', 'at' => time(),
        ], 0);
        $down = $this->client(new FakeTransport([new TransportException('down')]));
        self::assertFalse($down->isEnabled('a', $context));
        self::assertSame(Client::SOURCE_DEFAULTS, $down->status()['source'], 'not served from the old entry');
        self::assertCount(1, $this->logged);
        self::assertStringContainsString('serving defaults', $this->logged[0]);

        $transport = new FakeTransport([FakeTransport::bulk(['a' => true], '"2-y"'), new TransportException('down')]);
        $client = $this->client($transport, ['breaker_threshold' => 100, 'cache_prefix' => 'flagport']);
        self::assertTrue($client->isEnabled('a', $context));
        self::assertArrayNotHasKey('If-None-Match', $transport->requests[0]['headers'], 'no ETag from an unusable entry');
        $client->reset();
        self::assertTrue($client->isEnabled('a', $context), 'the new answer replaced the old entry');
        self::assertSame(Client::SOURCE_LAST_GOOD, $client->status()['source']);
    }

    public function testADamagedCacheEntryIsAMiss(): void
    {
        $context = ['targetingKey' => 'u'];
        (new MemoryStore())->store('flagport:lg:' . hash('xxh128', '{"targetingKey":"u"}'), [
            'format' => 3, 'body' => '{"flags": not json', 'etag' => '"1-x"', 'at' => time(),
        ], 0);
        $transport = new FakeTransport([FakeTransport::bulk(['a' => true], '"2-y"')]);
        $client = $this->client($transport);
        self::assertTrue($client->isEnabled('a', $context));
        self::assertArrayNotHasKey('If-None-Match', $transport->requests[0]['headers'], 'no ETag from a damaged entry');
        self::assertSame(Client::SOURCE_SERVER, $client->status()['source']);
    }

    public function testFailSafeServesLastGoodThenDefaults(): void
    {
        $transport = new FakeTransport([
            FakeTransport::bulk(['a' => true, 'n' => 5]),
            new TransportException('Connection refused'),
            new HttpResponse(503, '{"errorCode":"GENERAL"}'),
        ]);
        $client = $this->client($transport, ['defaults' => ['a' => false, 'n' => 1]]);
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u1']));
        $client->reset();
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u1']), 'last good value');
        self::assertSame(5, $client->value('n', 0, ['targetingKey' => 'u1']));
        self::assertSame(Client::SOURCE_LAST_GOOD, $client->status()['source']);
        self::assertSame(1, $client->value('n', 0, ['targetingKey' => 'u2']), 'configured default');
        self::assertSame(Client::SOURCE_DEFAULTS, $client->status()['source']);
        self::assertSame('x', $client->value('other', 'x', ['targetingKey' => 'u2']), 'call default');
        self::assertCount(1, $this->logged, 'logged once per cool-down');
        self::assertStringContainsString('Connection refused', $this->logged[0]);
    }

    /** @return iterable<string, array{HttpResponse|\Throwable}> */
    public static function garbage(): iterable
    {
        yield 'not json' => [new HttpResponse(200, '<html>oops')];
        yield 'json without flags' => [new HttpResponse(200, '{"a":1}')];
        yield 'flags not a list' => [new HttpResponse(200, '{"flags":"x"}')];
        yield 'truncated' => [new HttpResponse(200, '{"flags":[{"key":"a","value":tr')];
        yield 'server error' => [new HttpResponse(500, 'Internal Server Error')];
        yield 'unauthorized' => [new HttpResponse(401, '{}')];
        yield 'not modified without cache' => [new HttpResponse(304, '')];
        yield 'timeout' => [new TransportException('Operation timed out after 250 milliseconds')];
        yield 'unexpected error' => [new \RuntimeException('boom')];
    }

    /** @dataProvider garbage */
    public function testNeverThrows(HttpResponse|\Throwable $answer): void
    {
        $client = $this->client(new FakeTransport([$answer]), ['cache' => false, 'defaults' => ['a' => true]]);
        self::assertTrue($client->isEnabled('a'));
        self::assertSame('d', $client->value('b', 'd'));
        self::assertSame(['a' => true], $client->all());
        self::assertSame(Client::SOURCE_DEFAULTS, $client->status()['source']);
        self::assertCount(1, $this->logged);
    }

    public function testBadItemsAreSkipped(): void
    {
        $body = '{"flags":[1,"x",{"value":true},{"key":7},{"key":"ok","value":true,"variant":"on","reason":"STATIC"}]}';
        $client = $this->client(new FakeTransport([new HttpResponse(200, $body)]));
        self::assertSame(['ok' => true], $client->all());
    }

    public function testErrorsQuoteWhatTheServerSentAsValidUtf8(): void
    {
        $answers = [new HttpResponse(200, "\x00\xff{not json"), new HttpResponse(502, "\xfe\xffbad gateway")];
        $client = $this->client(new FakeTransport($answers), ['breaker_threshold' => 5]);
        $errors = [];
        foreach (['a', 'b'] as $unit) {
            $client->isEnabled('x', ['targetingKey' => $unit]);
            $errors[] = (string) $client->status()['error'];
        }
        self::assertStringEndsWith('OFREP bulk answer: \000\377{not json', $errors[0]);
        self::assertStringEndsWith(': \376\377bad gateway', $errors[1]);
        self::assertNotFalse(json_encode([$errors, $this->logged]), 'messages are valid UTF-8');
    }

    public function testUnencodableContextIsFailSafe(): void
    {
        $client = $this->client(new FakeTransport([]));
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u', 'x' => NAN], true));
    }

    public function testCircuitOpensAfterThresholdAndProbesAfterCooldown(): void
    {
        $transport = new FakeTransport([
            new TransportException('refused'), new TransportException('refused'), new TransportException('refused'),
            FakeTransport::bulk(['a' => true]),
        ]);
        $client = $this->client($transport, ['breaker_threshold' => 3, 'breaker_cooldown' => 0.2]);
        for ($i = 0; $i < 10; $i++) {
            $client->reset();
            self::assertFalse($client->isEnabled('a', ['targetingKey' => "u$i"]));
        }
        self::assertCount(3, $transport->requests, 'no calls while open');
        self::assertSame(CircuitBreaker::OPEN, $client->status()['circuit']);
        usleep(250_000);
        self::assertSame(CircuitBreaker::HALF_OPEN, $client->status()['circuit']);
        $client->reset();
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'probe']));
        self::assertSame(CircuitBreaker::CLOSED, $client->status()['circuit']);
        self::assertCount(1, $this->logged);
        self::assertStringContainsString('refused', $this->logged[0]);
    }

    public function testFailedProbeReopens(): void
    {
        $transport = new FakeTransport(array_fill(0, 5, new TransportException('refused')));
        $client = $this->client($transport, ['breaker_threshold' => 2, 'breaker_cooldown' => 0.1]);
        $client->all(['targetingKey' => 'a']);
        $client->all(['targetingKey' => 'b']);
        usleep(150_000);
        $client->all(['targetingKey' => 'c']);
        self::assertCount(3, $transport->requests);
        self::assertSame(CircuitBreaker::OPEN, $client->status()['circuit']);
        $client->all(['targetingKey' => 'd']);
        self::assertCount(3, $transport->requests);
    }

    public function testEtagRevalidationAndNotModified(): void
    {
        $transport = new FakeTransport([FakeTransport::bulk(['a' => true], '"7-abc"'), new HttpResponse(304, '', '"7-abc"')]);
        $client = $this->client($transport);
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u']));
        $client->reset();
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u']));
        self::assertSame('"7-abc"', $transport->requests[1]['headers']['If-None-Match'] ?? null);
        self::assertSame(Client::SOURCE_NOT_MODIFIED, $client->status()['source']);
    }

    public function testCacheIsCappedAndExpires(): void
    {
        $answers = [];
        for ($i = 0; $i < 6; $i++) {
            $answers[] = FakeTransport::bulk(['a' => true], "\"1-$i\"");
        }
        $answers = array_merge($answers, array_fill(0, 20, new TransportException('down')));
        $transport = new FakeTransport($answers);
        $client = $this->client($transport, ['cache_max_entries' => 4, 'breaker_threshold' => 100]);
        for ($i = 0; $i < 6; $i++) {
            $client->all(['targetingKey' => "u$i"]);
        }
        $client->reset();
        $kept = 0;
        for ($i = 0; $i < 6; $i++) {
            $kept += $client->isEnabled('a', ['targetingKey' => "u$i"]) ? 1 : 0;
        }
        self::assertLessThanOrEqual(4, $kept);
        self::assertTrue($client->isEnabled('a', ['targetingKey' => 'u5']), 'the newest context is kept');

        $expired = $this->client(new FakeTransport([FakeTransport::bulk(['a' => true]), new TransportException('down')]), ['cache_ttl' => -1]);
        $expired->all(['targetingKey' => 'z']);
        $expired->reset();
        self::assertFalse($expired->isEnabled('a', ['targetingKey' => 'z']));
    }
}
