<?php

declare(strict_types=1);

namespace Flagport\Outcomes;

/**
 * Taken counters as `POST /v1/outcomes` bodies (docs/spec.md section 13): one period per
 * minute (the server counts a batch in the minute holding its period's last instant), items
 * and events split within the batch bounds ({@see Limits}), as `flagport.reporting` does.
 */
final class Batches
{
    /**
     * The counters (`<minute>:<kind>:<series>` => count) grouped by minute.
     *
     * @param array<string, int> $counters
     * @return array<int, array<string, int>>
     */
    public static function byMinute(array $counters): array
    {
        $minutes = [];
        foreach ($counters as $key => $value) {
            $minutes[(int) strstr((string) $key, ':', true)][(string) $key] = $value;
        }
        ksort($minutes);
        return $minutes;
    }

    /**
     * Requests the counters hold (their histograms' counts).
     *
     * @param array<string, int> $counters
     */
    public static function requests(array $counters): int
    {
        $requests = 0;
        foreach ($counters as $key => $value) {
            [, $kind] = explode(':', (string) $key, 3);
            if ($kind[0] === 'b') {
                $requests += $value;
            }
        }
        return $requests;
    }

    /**
     * One minute's counters as bodies: period `[start, end]` with end the minute's end or
     * `$now` (the earlier) and start the previous take (`$since`), the minute's start, or
     * 120 s before the end (the latest). `stale`: the period ended too long ago to be posted.
     *
     * @param array<string, int> $counters one minute's
     * @return array{stale: bool, requests: int, bodies: list<string>, items: list<array<string, mixed>>, events: list<array<string, mixed>>}
     */
    public static function build(array $counters, int $minute, ?float $since, float $now): array
    {
        $end = min($now, (float) ($minute + 60));
        $start = max((float) $minute, $since ?? (float) $minute, $end - Limits::MAX_PERIOD_SECONDS);
        // Counts put back after a failed post may be older than the last take: their period
        // still ends in their minute, and is not empty (an empty period ending on a minute's
        // first second would count in the next minute).
        $start = min($start, $end - 0.001);
        [$items, $events] = self::parts($counters);
        $requests = 0;
        foreach ($items as $item) {
            $requests += $item['requests'];
        }
        $stale = $end < $now - Limits::FRESH_SECONDS;
        return [
            'stale' => $stale,
            'requests' => $requests,
            'bodies' => $stale ? [] : self::bodies([$start, $end], $items, $events),
            'items' => $items,
            'events' => $events,
        ];
    }

    /**
     * @param array<string, int> $counters
     * @return array{0: list<array<string, mixed>>, 1: list<array<string, mixed>>}
     */
    private static function parts(array $counters): array
    {
        $series = [];
        $events = [];
        foreach ($counters as $key => $value) {
            [, $kind, $name] = explode(':', (string) $key, 3);
            if ($kind === 'e') {
                $event = json_decode($name, true);
                if (is_array($event) && count($event) === 5) {
                    $events[] = [
                        'key' => $event[0], 'variant' => $event[1], 'cohort' => $event[2],
                        'name' => $event[3], 'labels' => (object) $event[4], 'count' => $value,
                    ];
                }
                continue;
            }
            $series[$name][$kind] = $value;
        }
        $items = [];
        foreach ($series as $name => $kinds) {
            $read = json_decode((string) $name, true);
            if (!is_array($read) || count($read) !== 3 || count($items) >= Limits::MAX_HELD_ITEMS) {
                continue;
            }
            $buckets = array_fill(0, Limits::BUCKETS, 0);
            foreach ($kinds as $kind => $count) {
                if ($kind[0] === 'b') {
                    $buckets[(int) substr((string) $kind, 1)] = $count;
                }
            }
            $requests = array_sum($buckets);
            if ($requests === 0) {
                continue; // failures or latency without their request: a writer killed midway
            }
            $items[] = [
                'key' => $read[0], 'variant' => $read[1], 'cohort' => $read[2],
                'requests' => $requests,
                'failures' => min($kinds['f'] ?? 0, $requests),
                'latency_us' => min($kinds['l'] ?? 0, $requests * Limits::MAX_REQUEST_US),
                'latency_buckets' => $buckets,
            ];
        }
        return [$items, $events];
    }

    /**
     * An item of more than {@see Limits::MAX_REQUESTS} requests as several within it:
     * buckets peeled off in order, failures first, the latency shared in proportion.
     *
     * @param array<string, mixed> $item
     * @return list<array<string, mixed>>
     */
    public static function splitItem(array $item): array
    {
        $remaining = (int) $item['requests'];
        if ($remaining <= Limits::MAX_REQUESTS) {
            return [$item];
        }
        $parts = [];
        $left = $item['latency_buckets'];
        $failures = (int) $item['failures'];
        $latency = (int) $item['latency_us'];
        while ($remaining > 0) {
            $buckets = array_fill(0, Limits::BUCKETS, 0);
            $room = Limits::MAX_REQUESTS;
            foreach ($left as $index => $count) {
                $taken = min($count, $room);
                $buckets[$index] = $taken;
                $left[$index] -= $taken;
                $room -= $taken;
            }
            $requests = Limits::MAX_REQUESTS - $room;
            $partFailures = min($failures, $requests);
            $partLatency = intdiv($latency * $requests, $remaining);
            $parts[] = ['requests' => $requests, 'failures' => $partFailures, 'latency_us' => $partLatency, 'latency_buckets' => $buckets] + $item;
            $failures -= $partFailures;
            $latency -= $partLatency;
            $remaining -= $requests;
        }
        return $parts;
    }

    /**
     * @param array{0: float, 1: float} $period
     * @param list<array<string, mixed>> $items
     * @param list<array<string, mixed>> $events
     * @return list<string>
     */
    private static function bodies(array $period, array $items, array $events): array
    {
        $head = '{"period":' . json_encode($period, Reporter::JSON_FLAGS) . ',"items":[';
        $bodies = [];
        $batchItems = [];
        $batchEvents = [];
        $size = strlen($head) + 20;
        $close = static function () use (&$bodies, &$batchItems, &$batchEvents, &$size, $head): void {
            $bodies[] = $head . implode(',', $batchItems) . '],"events":[' . implode(',', $batchEvents) . ']}';
            $batchItems = [];
            $batchEvents = [];
            $size = strlen($head) + 20;
        };
        foreach ($items as $whole) {
            foreach (self::splitItem($whole) as $item) {
                $latency = $item['latency_us'];
                unset($item['latency_us']);
                $item['latency_ms_sum'] = $latency / 1000;
                // The wire's field order, as Python's encoder writes it.
                $encoded = (string) json_encode([
                    'key' => $item['key'], 'variant' => $item['variant'], 'cohort' => $item['cohort'],
                    'requests' => $item['requests'], 'failures' => $item['failures'],
                    'latency_ms_sum' => $item['latency_ms_sum'], 'latency_buckets' => $item['latency_buckets'],
                ], Reporter::JSON_FLAGS);
                if (count($batchItems) === Limits::MAX_OUTCOME_ITEMS || $size + strlen($encoded) + 1 > Limits::MAX_OUTCOME_BODY) {
                    $close();
                }
                $batchItems[] = $encoded;
                $size += strlen($encoded) + 1;
            }
        }
        foreach ($events as $whole) {
            $count = (int) $whole['count'];
            do {
                $part = min($count, Limits::MAX_EVENT_COUNT);
                $count -= $part;
                $encoded = (string) json_encode(['count' => $part] + $whole, Reporter::JSON_FLAGS);
                if (count($batchEvents) === Limits::MAX_OUTCOME_EVENTS || $size + strlen($encoded) + 1 > Limits::MAX_OUTCOME_BODY) {
                    $close();
                }
                $batchEvents[] = $encoded;
                $size += strlen($encoded) + 1;
            } while ($count > 0);
        }
        if ($batchItems !== [] || $batchEvents !== []) {
            $close();
        }
        return $bodies;
    }
}
