<?php

declare(strict_types=1);

namespace Flagport\Outcomes;

/**
 * The outcome wire shape's numbers (docs/spec.md section 13, "Outcome signals"), as the
 * Python SDK's `flagport.rollout.limits` and `flagport.reporting` have them. Their home is
 * Python; tests/php/test_php_outcomes.py checks every constant here against it, so the two
 * cannot drift.
 */
final class Limits
{
    /** Upper bounds (ms) of the 13 latency buckets; the last is +inf (INF). */
    public const LATENCY_BOUNDS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2000, 2500, 5000, 10000, INF];
    public const BUCKETS = 13;
    /** One batch: items, events, body bytes (as `/v1/exposures`). */
    public const MAX_OUTCOME_ITEMS = 1000;
    public const MAX_OUTCOME_EVENTS = 1000;
    public const MAX_OUTCOME_BODY = 1048576;
    /** Requests one item may report; events one event item may. */
    public const MAX_REQUESTS = 1000000;
    public const MAX_EVENT_COUNT = 1000000;
    /** A period is at most this long, and is refused once it ended this long ago. */
    public const MAX_PERIOD_SECONDS = 120;
    public const MAX_PERIOD_AGE_SECONDS = 120;
    public const MAX_VARIANT_LENGTH = 100;
    public const MAX_KEY_LENGTH = 200;
    public const KEY_PATTERN = '/^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$/D';
    public const EVENT_NAME_PATTERN = '/^[A-Za-z_][A-Za-z0-9_.:-]*$/D';
    public const LABEL_NAME_PATTERN = '/^[A-Za-z_][A-Za-z0-9_]*$/D';
    public const MAX_EVENT_NAME_LENGTH = 64;
    public const MAX_LABELS = 8;
    public const MAX_LABEL_NAME_LENGTH = 64;
    public const MAX_LABEL_VALUE_LENGTH = 256;
    /** Event series per flag, cohort and minute the server keeps; more are not counted. */
    public const MAX_EVENT_SERIES = 1000;
    /** What a reporter holds: plan reads per request, items per period (flagport.reporting). */
    public const MAX_READS_PER_REQUEST = 64;
    public const MAX_HELD_ITEMS = 10000;
    /** A request longer than a day counts as a day (the server's bound per request). */
    public const MAX_REQUEST_US = 86400000000;
    /** A batch is not posted once its period ended this long ago: it would arrive stale. */
    public const FRESH_SECONDS = self::MAX_PERIOD_AGE_SECONDS - 10;
    /** Seconds between two posts of a pool's batch. */
    public const REPORT_INTERVAL = 1.0;

    /**
     * The bucket of a request of `$micros` µs: the first bound >= its duration in ms. Every
     * finite bound is whole ms, so `d <= bound` exactly when `ceil(d) <= bound` (as Python).
     */
    public static function bucketOf(int $micros): int
    {
        $ms = intdiv($micros + 999, 1000);
        foreach (self::LATENCY_BOUNDS_MS as $index => $bound) {
            if ($ms <= $bound) {
                return $index;
            }
        }
        return self::BUCKETS - 1;
    }
}
