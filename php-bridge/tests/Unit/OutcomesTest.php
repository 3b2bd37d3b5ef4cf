<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\Client;
use Flagport\HttpResponse;
use Flagport\Outcomes\Aggregate;
use Flagport\Outcomes\Batches;
use Flagport\Outcomes\Limits;
use Flagport\Outcomes\Reporter;
use Flagport\Store\ApcuStore;
use Flagport\Store\MemoryStore;
use Flagport\TransportException;
use PHPUnit\Framework\TestCase;

/**
 * The outcome aggregate and its batches (docs/spec.md section 13): bucketing, merging, the
 * pool's take played by two "workers" (two aggregates on one APCu), the bounds, and the path
 * without APCu. APCu tests need `apc.enable_cli=1` (tests/php/test_php_outcomes.py sets it).
 */
final class OutcomesTest extends TestCase
{
    private const TREATMENT = ['rolloutFlag' => 'ui-improvements', 'rolloutCohort' => 'treatment', 'rolloutVariant' => 'on'];
    private const CONTROL = ['rolloutFlag' => 'ui-improvements', 'rolloutCohort' => 'control', 'rolloutVariant' => 'off'];

    /** @var list<string> */
    private array $logged = [];
    private string $prefix = '';
    private float $now = 0.0;

    protected function setUp(): void
    {
        $this->logged = [];
        $this->prefix = 'unit-' . bin2hex(random_bytes(4));
        $this->now = floor(microtime(true) / 60) * 60 + 10; // 10 s into a minute
    }

    private function requireApcu(): void
    {
        if (!ApcuStore::available()) {
            self::fail('APCu is needed (php -d apc.enable_cli=1)');
        }
    }

    private function reporter(FakeTransport $transport, bool $shared = true): Reporter
    {
        $logger = function (string $message): void {
            $this->logged[] = $message;
        };
        $reporter = new Reporter(new Aggregate($this->prefix, $shared), $transport, $logger, fn (): float => $this->now);
        $reporter->flush(); // the pool "posted" just now: the next post is due in 1 s
        return $reporter;
    }

    /**
     * One request that read `$reads`, `$ms` long, ending now with `$status`.
     *
     * @param list<array<string, string>> $reads
     */
    private function request(Reporter $reporter, array $reads, float $ms, int $status = 200): void
    {
        $reporter->begin($this->now - $ms / 1000);
        foreach ($reads as $metadata) {
            $reporter->note($metadata);
        }
        $reporter->end($status);
    }

    /**
     * The batches a transport received, decoded.
     *
     * @return list<array<string, mixed>>
     */
    private static function posted(FakeTransport $transport): array
    {
        $bodies = [];
        foreach ($transport->requests as $request) {
            self::assertSame('/v1/outcomes', $request['path']);
            $bodies[] = json_decode((string) $request['body'], true, 16, JSON_THROW_ON_ERROR);
        }
        return $bodies;
    }

    private static function ok(): HttpResponse
    {
        return new HttpResponse(200, '{"counted":1,"requests":1,"events":0,"rejected":[]}');
    }

    /**
     * What runs before the answer is sent (begin, note) never makes the pool's aggregate:
     * its class loads in terminate(), not on every page's wait.
     */
    public function testTheAggregateIsMadeAtTheFirstCountNotBeforeTheAnswer(): void
    {
        $made = 0;
        $make = function () use (&$made): Aggregate {
            $made++;
            return new Aggregate($this->prefix, false);
        };
        $reporter = new Reporter($make, new FakeTransport(), static function (string $message): void {
        }, fn (): float => $this->now);
        $reporter->begin($this->now - 0.01);
        $reporter->note(['rolloutFlag' => 'checkout', 'rolloutVariant' => 'on', 'rolloutCohort' => 'treatment']);
        self::assertSame(0, $made);
        $reporter->end(200);
        self::assertSame(1, $made);
        $reporter->aggregate();
        self::assertSame(1, $made); // made once
    }

    public function testDurationsFallInTheFirstBucketWhoseBoundIsAtLeastThem(): void
    {
        $cases = [0 => 0, 1 => 0, 5000 => 0, 5001 => 1, 10000 => 1, 10001 => 2, 250000 => 5, 250001 => 6,
            2000000 => 8, 2000001 => 9, 2500000 => 9, 10000000 => 11, 10000001 => 12, Limits::MAX_REQUEST_US => 12];
        foreach ($cases as $micros => $bucket) {
            self::assertSame($bucket, Limits::bucketOf($micros), "$micros µs");
        }
        self::assertCount(Limits::BUCKETS, Limits::LATENCY_BOUNDS_MS);
    }

    public function testRequestsMergePerCohortWithTheirStatusAndDuration(): void
    {
        $this->requireApcu();
        $transport = new FakeTransport([self::ok(), self::ok()]);
        $reporter = $this->reporter($transport);
        $this->now += 2;
        $this->request($reporter, [self::TREATMENT], 3.0);
        self::assertCount(1, $transport->requests, 'the first request 1 s after the last post posts');
        $this->request($reporter, [self::TREATMENT, self::TREATMENT], 40.0, 503); // one read, once
        $this->request($reporter, [self::CONTROL], 12.5, 404);
        $this->request($reporter, [], 1.0, 500); // read no plan flag: not counted
        self::assertCount(1, $transport->requests, 'the next post is due 1 s after it');
        $transport->requests = [];
        $this->now += 0.5;
        self::assertSame(2, $reporter->flush());
        [$batch] = self::posted($transport);
        self::assertSame([$this->now - 0.5, $this->now], $batch['period'], 'since the last post');
        $items = [];
        foreach ($batch['items'] as $item) {
            $items[$item['cohort']] = $item;
        }
        $treatment = $items['treatment'];
        self::assertSame(['ui-improvements', 'on', 1, 1], [$treatment['key'], $treatment['variant'], $treatment['requests'], $treatment['failures']]);
        self::assertEqualsWithDelta(40.0, $treatment['latency_ms_sum'], 0.002);
        self::assertSame([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], $treatment['latency_buckets']);
        self::assertSame([1, 0], [$items['control']['requests'], $items['control']['failures']]);
        self::assertSame([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], $items['control']['latency_buckets']);
        self::assertSame([], $batch['events']);
    }

    public function testTwoWorkersNeverSendACountTwiceNorLoseOneAddedMeanwhile(): void
    {
        $this->requireApcu();
        $first = $this->reporter($firstTransport = new FakeTransport([self::ok(), self::ok()]));
        $second = $this->reporter($secondTransport = new FakeTransport([self::ok(), self::ok()]));
        for ($n = 0; $n < 3; $n++) {
            $this->request($first, [self::TREATMENT], 2.0);
        }
        $this->request($second, [self::TREATMENT], 2.0);
        // The second worker takes the pool's batch: the first's requests too, once.
        self::assertSame(4, $second->flush());
        self::assertSame(0, $first->flush(), 'nothing left: taken once');
        // Counts added after a take wait for the next one, whichever worker takes it.
        $this->request($first, [self::TREATMENT], 2.0);
        $this->request($second, [self::TREATMENT], 2.0, 500);
        self::assertSame(2, $first->flush());
        $sent = array_merge(self::posted($secondTransport), self::posted($firstTransport));
        self::assertSame([4, 2], array_map(static fn (array $batch): int => $batch['items'][0]['requests'], $sent));
        self::assertSame(1, $sent[1]['items'][0]['failures']);

        // While one worker takes, another's take gets nothing (the lock), and loses nothing.
        $this->request($first, [self::TREATMENT], 2.0);
        $aggregate = new Aggregate($this->prefix, true);
        self::assertTrue(apcu_add($aggregate->key('lock'), 1, 10));
        self::assertNull($aggregate->take($this->now));
        apcu_delete($aggregate->key('lock'));
        self::assertSame(1, $second->flush());
    }

    public function testATakeWaitsForAWriterInTheGenerationItCloses(): void
    {
        $this->requireApcu();
        $writer = new Aggregate($this->prefix, true);
        $taker = new Aggregate($this->prefix, true);
        $writer->addRequest(['["f","on","treatment"]'], false, 1000, $this->now);
        $generation = $writer->enter(); // a worker between its counts
        $started = hrtime(true);
        $taken = $taker->take($this->now);
        $waited = (hrtime(true) - $started) / 1e6;
        $writer->leave($generation);
        self::assertGreaterThanOrEqual(15.0, $waited, 'the take waited for the writer');
        self::assertNotNull($taken);
        self::assertSame(1, Batches::requests($taken['counters']));
        // A writer entering now writes in the next generation: the next take has it.
        $writer->addRequest(['["f","on","treatment"]'], true, 1000, $this->now);
        $next = $taker->take($this->now + 1);
        self::assertNotNull($next);
        self::assertSame(1, Batches::requests($next['counters']));
        self::assertSame($this->now, $next['since']);
    }

    public function testEventsCountForTheRequestsCohortsWithinTheBounds(): void
    {
        $this->requireApcu();
        $transport = new FakeTransport([self::ok()]);
        $reporter = $this->reporter($transport);
        self::assertSame(0, $reporter->event('user_report', ['severity' => 'critical']), 'outside a request');
        $reporter->begin($this->now);
        self::assertSame(0, $reporter->event('user_report'), 'no plan cohort read yet');
        $reporter->note(self::TREATMENT);
        $reporter->note(self::CONTROL);
        self::assertSame(2, $reporter->event('user_report', ['severity' => 'critical', 'page' => 'a']));
        self::assertSame(2, $reporter->event('user_report', ['page' => 'a', 'severity' => 'critical']));
        foreach ([
            ['9bad', []], [str_repeat('x', 65), []], ['ok', ['9bad' => 'v']], ['ok', ['l' => "a\r\nb"]],
            ['ok', ['l' => str_repeat('v', 257)]], ['ok', ['l' => 3]], ['ok', array_fill_keys(range('a', 'i'), 'v')],
        ] as [$name, $labels]) {
            self::assertSame(0, $reporter->event($name, $labels), $name . json_encode($labels));
        }
        self::assertNotSame([], $this->logged, 'a refused event is logged, not thrown');
        $reporter->end(200);
        self::assertSame(2, $reporter->flush());
        [$batch] = self::posted($transport);
        self::assertCount(2, $batch['events']);
        foreach ($batch['events'] as $event) {
            self::assertSame(['page' => 'a', 'severity' => 'critical'], $event['labels']);
            self::assertSame(2, $event['count']);
        }
    }

    public function testBounds(): void
    {
        $this->requireApcu();
        // Event series: at most MAX_EVENT_SERIES new ones a minute; a known one still counts.
        $aggregate = new Aggregate($this->prefix, true);
        $series = ['["f","on","treatment"]'];
        for ($n = 0; $n < Limits::MAX_EVENT_SERIES; $n++) {
            self::assertSame(1, $aggregate->addEvent($series, 'e', ['n' => (string) $n], $this->now));
        }
        self::assertSame(0, $aggregate->addEvent($series, 'e', ['n' => 'one-more'], $this->now));
        self::assertSame(0, $aggregate->addEvent($series, 'e', ['n' => 'one-more'], $this->now));
        self::assertSame(1, $aggregate->addEvent($series, 'e', ['n' => '7'], $this->now));
        $aggregate->take($this->now);

        // Plan reads per request.
        $reporter = $this->reporter(new FakeTransport());
        $reporter->begin($this->now);
        for ($n = 0; $n < 100; $n++) {
            $reporter->note(['rolloutFlag' => "flag-$n", 'rolloutCohort' => 'treatment', 'rolloutVariant' => 'on']);
        }
        self::assertCount(Limits::MAX_READS_PER_REQUEST, $reporter->reads());
        // Entries that are not the contract's are ignored.
        $reporter->begin($this->now);
        foreach ([
            ['rolloutFlag' => 'Bad Key', 'rolloutCohort' => 'treatment', 'rolloutVariant' => 'on'],
            ['rolloutFlag' => 'f', 'rolloutCohort' => 'neither', 'rolloutVariant' => 'on'],
            ['rolloutFlag' => 'f', 'rolloutCohort' => 'control', 'rolloutVariant' => ''],
            ['rolloutFlag' => 'f', 'rolloutCohort' => 'control', 'rolloutVariant' => 7],
            ['rolloutFlag' => 'f', 'rolloutCohort' => 'control'],
        ] as $metadata) {
            $reporter->note($metadata);
        }
        self::assertSame([], $reporter->reads());
        $reporter->end(200);

        // An item over MAX_REQUESTS is split exactly; a batch holds at most 1,000 items.
        $item = ['key' => 'f', 'variant' => 'on', 'cohort' => 'treatment', 'requests' => 2500001, 'failures' => 1200000,
            'latency_us' => 7500003, 'latency_buckets' => [2000000, 0, 500001, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]];
        $parts = Batches::splitItem($item);
        self::assertCount(3, $parts);
        foreach (['requests', 'failures', 'latency_us'] as $field) {
            self::assertSame($item[$field], array_sum(array_column($parts, $field)), $field);
        }
        foreach ($parts as $part) {
            self::assertLessThanOrEqual(Limits::MAX_REQUESTS, $part['requests']);
            self::assertSame($part['requests'], array_sum($part['latency_buckets']));
            self::assertLessThanOrEqual($part['requests'], $part['failures']);
        }
        $counters = [];
        for ($n = 0; $n < 1500; $n++) {
            $counters[Aggregate::minuteOf($this->now) . ':b0:' . json_encode(["flag-$n", 'on', 'treatment'])] = 1;
        }
        $built = Batches::build($counters, Aggregate::minuteOf($this->now), null, $this->now);
        self::assertCount(2, $built['bodies']);
        self::assertSame(1500, $built['requests']);
        foreach ($built['bodies'] as $body) {
            self::assertLessThanOrEqual(Limits::MAX_OUTCOME_BODY, strlen($body));
        }
    }

    public function testAPostThatFailsIsRetriedWhileFreshAndARefusedOneIsDropped(): void
    {
        $this->requireApcu();
        $transport = new FakeTransport([new TransportException('refused'), new HttpResponse(503, ''), self::ok(), new HttpResponse(400, '{}')]);
        $reporter = $this->reporter($transport);
        $this->request($reporter, [self::TREATMENT], 2.0);
        self::assertSame(0, $reporter->flush()); // no answer: kept
        self::assertSame(0, $reporter->flush()); // 503: kept
        $this->request($reporter, [self::TREATMENT], 2.0);
        self::assertSame(2, $reporter->flush());
        $this->request($reporter, [self::TREATMENT], 2.0);
        self::assertSame(0, $reporter->flush()); // 400: dropped
        self::assertSame(1, $reporter->lost);
        self::assertSame(0, $reporter->flush());
        self::assertCount(4, $transport->requests);
        self::assertCount(1, $this->logged, 'one log line per 30 s for the pool');

        // Counts whose minute ended more than 110 s ago are dropped, not posted stale.
        $this->request($reporter, [self::TREATMENT], 2.0);
        $this->now += 200;
        self::assertSame(0, $reporter->flush());
        self::assertSame(2, $reporter->lost);
        self::assertCount(4, $transport->requests);
    }

    public function testWithoutApcuEveryRequestPostsItsOwnCounts(): void
    {
        MemoryStore::flush();
        $transport = new FakeTransport([
            FakeTransport::bulk(['ui-improvements.dropdown-fixes' => true]), self::ok(), new TransportException('down'),
        ]);
        // A gated child's answer carries its plan's cohort metadata (the server puts it there).
        $answer = json_decode($transport->answers[0]->body, true);
        $answer['flags'][0]['metadata'] = self::TREATMENT;
        $transport->answers[0] = new HttpResponse(200, (string) json_encode($answer), '"1-x"');
        $logger = function (string $message): void {
            $this->logged[] = $message;
        };
        $client = new Client(['url' => 'http://fake'], null, new MemoryStore(), $transport, $logger);
        $outcomes = $client->outcomes();
        self::assertFalse($outcomes->aggregate()->isShared());
        $outcomes->begin(microtime(true) - 0.02);
        self::assertTrue($client->isEnabled('ui-improvements.dropdown-fixes', ['targetingKey' => '1']));
        self::assertSame(1, $client->report('user_report', ['severity' => 'critical']));
        $outcomes->end(502);
        [, $post] = $transport->requests;
        $batch = json_decode((string) $post['body'], true);
        self::assertSame(['ui-improvements', 'treatment', 1, 1], [
            $batch['items'][0]['key'], $batch['items'][0]['cohort'], $batch['items'][0]['requests'], $batch['items'][0]['failures'],
        ]);
        self::assertSame(2, array_search(1, $batch['items'][0]['latency_buckets'], true), '~20 ms: the 25 ms bucket');
        self::assertSame('user_report', $batch['events'][0]['name']);
        $length = $batch['period'][1] - $batch['period'][0];
        self::assertTrue($length >= 0.02 && $length < 1.0, "the request's own period: $length s");
        // The next request's post fails: dropped (a request's counts die with it), never thrown.
        $outcomes->begin();
        $client->isEnabled('ui-improvements.dropdown-fixes', ['targetingKey' => '1']);
        $outcomes->end(200);
        self::assertSame(1, $outcomes->lost);
    }
}
