<?php

declare(strict_types=1);

namespace Flagport\Outcomes;

/**
 * The outcome counts of a PHP-FPM pool, shared through APCu: requests and events per (plan
 * flag, variant, cohort) and minute, until one worker takes them to post them.
 *
 * Every count is an APCu integer counter (`apcu_inc`), so adding a request costs a few APCu
 * operations and no lock. A request adds to several counters (its latency bucket, the
 * failures, the latency sum), and a batch whose histogram does not add up to its requests or
 * whose failures outnumber them is refused by the server; so the counters live in a
 * *generation*, and a take closes one first:
 *
 * - a writer reads the generation `g`, counts itself in `a:g` (writers at work), reads the
 *   generation again (retrying if it moved), adds its counts under `g` and leaves `a:g`;
 * - the taker (one at a time: an `apcu_add` lock) moves the generation to `g + 1`, waits
 *   until `a:g` is 0 (a few µs: writers do not block), then reads and deletes everything
 *   under the generations before `g + 1`, which nobody writes any more.
 *
 * APCu operations are atomic, so a writer either is seen by the taker's wait or sees the new
 * generation and writes there: a count is taken exactly once, and whole. A writer stalled
 * longer than the wait (50 ms: a loaded machine) is still not lost: the taker subtracts what
 * it read (`apcu_dec`) rather than deleting, so a late addition stays for the next take, and
 * a writer adds a request's failure and latency before its bucket, so a failure or latency
 * whose request is not there yet is left for the next take too. A counter is deleted once a
 * later take finds it at 0 (a writer would have to stall a whole take interval to race it).

 * Without APCu (`$shared` false) the counters are this object's array: the reporter posts
 * them at the end of each request.
 *
 * Keys, under `<prefix>:oc:`: `g` (generation), `a:<g>` (writers), `last` (time of the last
 * take), `lock`, `n:<minute>` and `s:<minute>:<series>` (event series seen, for the bound),
 * and the counters `<g>:<minute>:<kind>:<series>` where kind is `b0`..`b12` (requests per
 * latency bucket), `f` (failures), `l` (latency, µs) or `e` (events), and series the JSON
 * list `[flag, variant, cohort]` (events: plus the name and the sorted labels).
 */
final class Aggregate
{
    /** Seconds a counter outlives its minute if nobody takes it (stale by then anyway). */
    private const TTL = 300;
    /** How long a take waits for writers still adding to the closed generation. */
    private const WRITER_WAIT_US = 50000;
    /** A take lock left by a killed worker expires after this many seconds. */
    private const LOCK_TTL = 10;

    private string $keys;
    /** @var array<string, int> the counters when not shared */
    private array $local = [];

    public function __construct(string $prefix, private bool $shared)
    {
        $this->keys = $prefix . ':oc:';
    }

    /** The APCu key of `$name` among this aggregate's. */
    public function key(string $name): string
    {
        return $this->keys . $name;
    }

    public function isShared(): bool
    {
        return $this->shared;
    }

    /**
     * One finished request that read the plan cohorts `$series` (JSON `[flag, variant,
     * cohort]` each): failed or not, its duration in µs, ending at `$now`.
     *
     * @param list<string> $series
     */
    public function addRequest(array $series, bool $failed, int $micros, float $now): void
    {
        $micros = min(max($micros, 0), Limits::MAX_REQUEST_US);
        $bucket = 'b' . Limits::bucketOf($micros) . ':';
        $generation = $this->enter();
        try {
            $base = $this->keys . $generation . ':' . self::minuteOf($now) . ':';
            foreach ($series as $one) {
                // The bucket last: a taker that sees the request sees its failure and latency.
                if ($micros > 0) {
                    $this->add($base . 'l:' . $one, $micros);
                }
                if ($failed) {
                    $this->add($base . 'f:' . $one, 1);
                }
                $this->add($base . $bucket . $one, 1);
            }
        } finally {
            $this->leave($generation);
        }
    }

    /**
     * One event for each plan cohort in `$series`; how many were counted (a new event series
     * beyond {@see Limits::MAX_EVENT_SERIES} in the minute is not).
     *
     * @param list<string> $series
     * @param array<string, string> $labels sorted by name
     */
    public function addEvent(array $series, string $name, array $labels, float $now): int
    {
        $minute = self::minuteOf($now);
        $tail = ',' . json_encode($name, Reporter::JSON_FLAGS) . ',' . json_encode((object) $labels, Reporter::JSON_FLAGS) . ']';
        $counted = 0;
        $generation = $this->enter();
        try {
            foreach ($series as $one) {
                $event = substr($one, 0, -1) . $tail;
                if (!$this->newSeriesAllowed($minute, $event)) {
                    continue;
                }
                $this->add($this->keys . $generation . ':' . $minute . ':e:' . $event, 1);
                $counted++;
            }
        } finally {
            $this->leave($generation);
        }
        return $counted;
    }

    /** Whether a post is due: the last take was `$interval` s ago or more (or never). */
    public function due(float $now, float $interval = Limits::REPORT_INTERVAL): bool
    {
        if (!$this->shared) {
            return true;
        }
        $last = apcu_fetch($this->keys . 'last');
        return !is_float($last) || $now - $last >= $interval;
    }

    /**
     * Take every count of the pool, if no other worker is taking them now: the counters by
     * `<minute>:<kind>:<series>`, and the time of the previous take (the period's start;
     * null: none). Null when another worker holds the take.
     *
     * @return array{counters: array<string, int>, since: ?float}|null
     */
    public function take(float $now): ?array
    {
        if (!$this->shared) {
            $counters = $this->local;
            $this->local = [];
            return ['counters' => $counters, 'since' => null];
        }
        if (!apcu_add($this->keys . 'lock', 1, self::LOCK_TTL)) {
            return null;
        }
        try {
            $last = apcu_fetch($this->keys . 'last');
            apcu_store($this->keys . 'last', $now, self::TTL);
            $closed = (int) apcu_inc($this->keys . 'g') - 1;
            $writers = $this->keys . 'a:' . $closed;
            $deadline = hrtime(true) + self::WRITER_WAIT_US * 1000;
            while ((int) apcu_fetch($writers) > 0 && hrtime(true) < $deadline) {
                usleep(20);
            }
            $read = [];
            $requested = [];
            $empty = [];
            $pattern = '/^' . preg_quote($this->keys, '/') . '(\d+):((\d+):(\w+):(.*))$/s';
            foreach (new \APCUIterator($pattern, APC_ITER_KEY | APC_ITER_VALUE) as $key => $entry) {
                if (preg_match($pattern, (string) $key, $match) !== 1 || (int) $match[1] > $closed) {
                    continue;
                }
                $value = $entry['value'];
                if (!is_int($value) || $value <= 0) {
                    if ((int) $match[1] < $closed) {
                        $empty[] = (string) $key; // taken by an earlier take, nothing added since
                    }
                    continue;
                }
                $read[(string) $key] = [$match[2], $value];
                if ($match[4][0] === 'b') {
                    $requested[$match[3] . ':' . $match[5]] = true;
                }
            }
            $counters = [];
            foreach ($read as $key => [$counter, $value]) {
                [$minute, $kind, $series] = explode(':', $counter, 3);
                if (($kind === 'f' || $kind === 'l') && !isset($requested[$minute . ':' . $series])) {
                    continue; // its request is not counted yet (a writer midway): next take
                }
                apcu_dec($key, $value);
                $counters[$counter] = ($counters[$counter] ?? 0) + $value;
            }
            if ($empty !== []) {
                apcu_delete($empty);
            }
            apcu_delete($writers);
            return ['counters' => $counters, 'since' => is_float($last) ? $last : null];
        } finally {
            apcu_delete($this->keys . 'lock');
        }
    }

    /**
     * Counters taken but not delivered (the server was away), added back for the next take.
     *
     * @param array<string, int> $counters by `<minute>:<kind>:<series>`
     */
    public function putBack(array $counters): void
    {
        $generation = $this->enter();
        try {
            foreach ($counters as $key => $value) {
                $this->add($this->keys . $generation . ':' . $key, $value);
            }
        } finally {
            $this->leave($generation);
        }
    }

    /** The start of the minute holding `$at`. */
    public static function minuteOf(float $at): int
    {
        return (int) floor($at / 60) * 60;
    }

    /**
     * Enter the current generation as a writer (see the class docblock); its number.
     *
     * @internal public for the tests that play two workers in one process
     */
    public function enter(): int
    {
        if (!$this->shared) {
            return 0;
        }
        $key = $this->keys . 'g';
        $generation = (int) apcu_fetch($key);
        for ($try = 0; $try < 3; $try++) {
            apcu_inc($this->keys . 'a:' . $generation, 1, $success, self::TTL);
            $now = (int) apcu_fetch($key);
            if ($now === $generation) {
                return $generation;
            }
            // A take closed it meanwhile: write in the new one.
            apcu_dec($this->keys . 'a:' . $generation);
            $generation = $now;
        }
        return $generation; // the taker moves on after its wait: counted in the next take
    }

    /** @internal see {@see enter()} */
    public function leave(int $generation): void
    {
        if ($this->shared) {
            apcu_dec($this->keys . 'a:' . $generation);
        }
    }

    private function add(string $key, int $by): void
    {
        if ($this->shared) {
            apcu_inc($key, $by, $success, self::TTL);
        } else {
            $local = substr($key, strlen($this->keys . '0:')); // one generation: 0
            $this->local[$local] = ($this->local[$local] ?? 0) + $by;
        }
    }

    private function newSeriesAllowed(int $minute, string $event): bool
    {
        if (!$this->shared) {
            $key = $minute . ':e:' . $event;
            if (isset($this->local[$key])) {
                return true;
            }
            $seen = 0;
            foreach ($this->local as $name => $_) {
                $seen += str_contains((string) $name, ':e:') ? 1 : 0;
            }
            return $seen < Limits::MAX_EVENT_SERIES;
        }
        // The marker says whether the series is counted this minute (1) or was over the bound (0).
        $marker = $this->keys . 's:' . $minute . ':' . $event;
        $seen = apcu_fetch($marker, $found);
        if ($found) {
            return $seen === 1;
        }
        if (!apcu_add($marker, 1, self::TTL)) {
            return apcu_fetch($marker) === 1;
        }
        $count = apcu_inc($this->keys . 'n:' . $minute, 1, $success, self::TTL);
        if (!is_int($count) || $count > Limits::MAX_EVENT_SERIES) {
            apcu_store($marker, 0, self::TTL);
            return false;
        }
        return true;
    }
}
