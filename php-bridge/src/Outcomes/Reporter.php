<?php

declare(strict_types=1);

namespace Flagport\Outcomes;

use Flagport\Transport;

/**
 * Outcome signals from PHP (docs/spec.md section 13, "Outcome signals"): which plan cohorts a
 * request read, what became of it, and the posts to `POST /v1/outcomes`.
 *
 * - **Reads.** Between {@see begin()} and {@see end()} (the Laravel middleware
 *   {@see \Flagport\Laravel\ReportOutcomes}), every answer the client reads that carries
 *   `rolloutFlag`, `rolloutCohort` and `rolloutVariant` (a flag under a running plan, or gated
 *   by one) adds that plan cohort to the request's set. Outside a request nothing is noted,
 *   and {@see event()} counts nothing: an event is never attributed to a cohort read for
 *   another request.
 * - **Aggregation.** {@see end()} adds the request (failed: status >= 500 or an exception
 *   escaping the app; its duration) to every cohort it read, in the pool's {@see Aggregate}.
 *   A PHP fatal error ends the request in the shutdown function instead, as a failure.
 * - **Delivery.** The first request that ends 1 s or more after the pool's last post takes
 *   the pool's counts and posts them through the client's transport (its URL, token and
 *   timeouts), a batch per minute within the batch bounds. Not delivered (no answer, 429,
 *   5xx): added back for the next post while fresh. Refused (another 4xx): dropped. Without
 *   APCu every request posts its own counts.
 *
 * Nothing here throws into the application: a failure is logged (once per 30 s for the pool)
 * and swallowed.
 */
final class Reporter
{
    public const PATH = '/v1/outcomes';
    public const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION;
    private const COHORTS = ['treatment' => true, 'control' => true];
    private const FATAL = E_ERROR | E_PARSE | E_CORE_ERROR | E_COMPILE_ERROR | E_USER_ERROR | E_RECOVERABLE_ERROR;
    /** Seconds between two log lines of the pool. */
    private const LOG_INTERVAL = 30;

    /** @var (callable(string): void) */
    private $logger;
    /** @var (callable(): float) */
    private $clock;
    private bool $open = false;
    private float $started = 0.0;
    /** @var array<string, string> the request's plan cohorts: flag\0variant\0cohort => series JSON */
    private array $reads = [];
    private bool $shutdownRegistered = false;
    private static bool $loggedHere = false;
    /** What the last post did (diagnostics and tests): requests and events delivered, lost. */
    public int $delivered = 0;
    public int $lost = 0;

    private ?Aggregate $aggregate = null;
    /** @var (\Closure(): Aggregate)|null */
    private ?\Closure $makeAggregate = null;

    /**
     * `$aggregate` may be given as a function that makes it: it is made at the first count,
     * in terminate(), after the answer was sent (loading its class before would add to
     * every page's wait).
     *
     * @param Aggregate|(\Closure(): Aggregate) $aggregate
     * @param (callable(string): void) $logger
     * @param (callable(): float)|null $clock seconds since the epoch (tests)
     */
    public function __construct(
        Aggregate|\Closure $aggregate,
        private Transport $transport,
        callable $logger,
        ?callable $clock = null,
    ) {
        if ($aggregate instanceof Aggregate) {
            $this->aggregate = $aggregate;
        } else {
            $this->makeAggregate = $aggregate;
        }
        $this->logger = $logger;
        $this->clock = $clock ?? static fn (): float => microtime(true);
    }

    public function aggregate(): Aggregate
    {
        if ($this->aggregate === null) {
            /** @var \Closure(): Aggregate $make */
            $make = $this->makeAggregate;
            $this->aggregate = $make();
        }
        return $this->aggregate;
    }

    /**
     * A request starts: note the plan cohorts it reads from now on. `$startedAt` (seconds
     * since the epoch) is when it started: `LARAVEL_START`, else the request's time.
     */
    public function begin(?float $startedAt = null): void
    {
        try {
            $this->open = true;
            $this->reads = [];
            $this->started = $startedAt ?? self::requestStart() ?? ($this->clock)();
            if (!$this->shutdownRegistered) {
                $this->shutdownRegistered = true;
                register_shutdown_function([$this, 'shutdown']);
            }
        } catch (\Throwable $error) {
            $this->log('flagport: outcomes: ' . $error->getMessage());
        }
    }

    /** Whether a request is open (between {@see begin()} and {@see end()}). */
    public function isOpen(): bool
    {
        return $this->open;
    }

    /**
     * An answer's metadata, read while serving the request (the client's answer paths).
     *
     * @param array<string, mixed> $metadata
     */
    public function note(array $metadata): void
    {
        if (!$this->open || count($this->reads) >= Limits::MAX_READS_PER_REQUEST) {
            return;
        }
        $flag = $metadata['rolloutFlag'] ?? null;
        $variant = $metadata['rolloutVariant'] ?? null;
        $cohort = $metadata['rolloutCohort'] ?? null;
        if (!is_string($flag) || !is_string($variant) || !is_string($cohort)) {
            return;
        }
        $id = $flag . "\0" . $variant . "\0" . $cohort;
        if (isset($this->reads[$id])) {
            return;
        }
        // Entries that are not the contract's are ignored (docs/spec.md, "Cohort metadata").
        if (
            !isset(self::COHORTS[$cohort]) || $variant === '' || strlen($variant) > Limits::MAX_VARIANT_LENGTH
            || strlen($flag) > Limits::MAX_KEY_LENGTH || preg_match(Limits::KEY_PATTERN, $flag) !== 1
            || !mb_check_encoding($variant, 'UTF-8')
        ) {
            return;
        }
        $this->reads[$id] = (string) json_encode([$flag, $variant, $cohort], self::JSON_FLAGS);
    }

    /**
     * The plan cohorts read so far in this request, as [flag, variant, cohort] lists.
     *
     * @return list<array{0: string, 1: string, 2: string}>
     */
    public function reads(): array
    {
        $reads = [];
        foreach ($this->reads as $series) {
            /** @var array{0: string, 1: string, 2: string} $read */
            $read = json_decode($series, true);
            $reads[] = $read;
        }
        return $reads;
    }

    /**
     * The request ends with `$status` (`$exception`: one escaped the app). Counted for
     * every plan cohort it read; then, when due, the pool's counts are posted.
     */
    public function end(int $status, bool $exception = false): void
    {
        if (!$this->open) {
            return;
        }
        $this->open = false;
        try {
            $this->record($exception || $status >= 500);
        } catch (\Throwable $error) {
            $this->log('flagport: outcomes not reported: ' . $error->getMessage());
        }
    }

    /**
     * The shutdown function: a request still open here did not reach the middleware's end
     * (a PHP fatal error, `exit`): counted, as a failure when a fatal error ended it.
     *
     * @internal registered by {@see begin()}
     */
    public function shutdown(): void
    {
        if (!$this->open) {
            return;
        }
        try {
            $error = error_get_last();
            $fatal = $error !== null && ($error['type'] & self::FATAL) !== 0;
            $status = http_response_code();
            $this->end(is_int($status) ? $status : 200, $fatal);
        } catch (\Throwable) {
            // nothing may escape a shutdown function
        }
    }

    /**
     * `report($name, $labels)`: one event for each plan cohort read so far in the request;
     * how many were counted (0 outside a request, and for a name or labels the wire shape
     * does not take: logged, not thrown).
     *
     * @param array<string, mixed> $labels
     */
    public function event(string $name, array $labels = []): int
    {
        try {
            if (!$this->open || $this->reads === []) {
                return 0;
            }
            $problem = self::eventProblem($name, $labels);
            if ($problem !== null) {
                $this->log('flagport: report(' . json_encode(substr($name, 0, Limits::MAX_EVENT_NAME_LENGTH)) . ') not counted: ' . $problem);
                return 0;
            }
            /** @var array<string, string> $labels */
            ksort($labels, SORT_STRING);
            return $this->aggregate()->addEvent(array_values($this->reads), $name, $labels, ($this->clock)());
        } catch (\Throwable $error) {
            $this->log('flagport: report() not counted: ' . $error->getMessage());
            return 0;
        }
    }

    /**
     * Why an event cannot be sent (the wire shape's bounds), or null.
     *
     * @param array<string, mixed> $labels
     */
    public static function eventProblem(string $name, array $labels): ?string
    {
        if (strlen($name) > Limits::MAX_EVENT_NAME_LENGTH || preg_match(Limits::EVENT_NAME_PATTERN, $name) !== 1) {
            return 'invalid event name: [A-Za-z_][A-Za-z0-9_.:-]*, at most ' . Limits::MAX_EVENT_NAME_LENGTH . ' characters';
        }
        if (count($labels) > Limits::MAX_LABELS) {
            return count($labels) . ' labels: at most ' . Limits::MAX_LABELS;
        }
        foreach ($labels as $label => $value) {
            $label = (string) $label;
            if (strlen($label) > Limits::MAX_LABEL_NAME_LENGTH || preg_match(Limits::LABEL_NAME_PATTERN, $label) !== 1) {
                return 'invalid label name ' . json_encode(substr($label, 0, Limits::MAX_LABEL_NAME_LENGTH));
            }
            if (!is_string($value)) {
                return "label $label: a value is a string, got " . get_debug_type($value);
            }
            if (!mb_check_encoding($value, 'UTF-8') || mb_strlen($value, 'UTF-8') > Limits::MAX_LABEL_VALUE_LENGTH) {
                return "label $label: a value is UTF-8 text of at most " . Limits::MAX_LABEL_VALUE_LENGTH . ' characters';
            }
            if (preg_match('/[\x00-\x1f\x7f]/', $value) === 1) {
                return "label $label: a value has a control character";
            }
        }
        return null;
    }

    /**
     * Take the pool's counts and post them now, whether due or not (tests, a CLI job's end);
     * requests delivered.
     */
    public function flush(): int
    {
        try {
            return $this->post(($this->clock)(), true);
        } catch (\Throwable $error) {
            $this->log('flagport: outcomes not reported: ' . $error->getMessage());
            return 0;
        }
    }

    private function record(bool $failed): void
    {
        $now = ($this->clock)();
        if ($this->reads !== []) {
            $micros = (int) round(($now - $this->started) * 1e6);
            $this->aggregate()->addRequest(array_values($this->reads), $failed, $micros, $now);
            $this->reads = [];
        }
        if ($this->aggregate()->due($now)) {
            $this->post($now, false);
        }
    }

    /** Take and post; the requests delivered. */
    private function post(float $now, bool $force): int
    {
        $taken = $this->aggregate()->take($now);
        if ($taken === null || $taken['counters'] === []) {
            return 0;
        }
        // Without APCu the counts are this request's: its period starts with it.
        $since = $taken['since'] ?? ($this->aggregate()->isShared() ? null : $this->started);
        $delivered = 0;
        $undelivered = [];
        $away = false;
        foreach (Batches::byMinute($taken['counters']) as $minute => $counters) {
            $batch = Batches::build($counters, $minute, $since, $now);
            if ($batch['stale']) {
                $this->lost += $batch['requests'];
                $this->log("flagport: outcomes of {$batch['requests']} request(s) dropped: their period is stale");
                continue;
            }
            if ($away) {
                $undelivered += $counters;
                continue;
            }
            foreach ($batch['bodies'] as $index => $body) {
                $status = $this->send($body);
                if ($status >= 200 && $status < 300) {
                    continue;
                }
                if ($index === 0 && ($status === 0 || $status === 429 || $status >= 500)) {
                    $away = true; // nothing of this minute arrived: all of it next time
                    $undelivered += $counters;
                    continue 2;
                }
                $this->lost += $batch['requests'];
                $this->log("flagport: outcomes of {$batch['requests']} request(s) dropped: POST " . self::PATH . " answered HTTP $status");
                continue 2;
            }
            $delivered += $batch['requests'];
        }
        if ($undelivered !== []) {
            if ($this->aggregate()->isShared()) {
                $this->aggregate()->putBack($undelivered);
            } else {
                $this->lost += Batches::requests($undelivered);
            }
        }
        $this->delivered += $delivered;
        return $delivered;
    }

    /** One post; its HTTP status, 0 when no answer came. */
    private function send(string $body): int
    {
        try {
            $response = $this->transport->request('POST', self::PATH, $body);
        } catch (\Throwable $error) {
            $this->log('flagport: outcomes not reported (retrying while fresh): ' . $error->getMessage());
            return 0;
        }
        if ($response->status >= 200 && $response->status < 300 && str_contains($response->body, '"rejected":[{')) {
            $this->log('flagport: POST ' . self::PATH . ': the server refused part of a batch: ' . substr($response->body, 0, 300));
        } elseif ($response->status === 429 || $response->status >= 500) {
            $this->log('flagport: POST ' . self::PATH . " answered HTTP {$response->status}; retrying while fresh");
        }
        return $response->status;
    }

    private static function requestStart(): ?float
    {
        if (defined('LARAVEL_START') && is_float(constant('LARAVEL_START'))) {
            return constant('LARAVEL_START');
        }
        $time = $_SERVER['REQUEST_TIME_FLOAT'] ?? null;
        return is_float($time) ? $time : null;
    }

    /** A warning at most once per 30 s for the pool (an outage is one line). */
    private function log(string $message): void
    {
        try {
            if ($this->aggregate()->isShared()) {
                if (!apcu_add($this->aggregate()->key('logged'), 1, self::LOG_INTERVAL)) {
                    return;
                }
            } elseif (self::$loggedHere) {
                return;
            }
            self::$loggedHere = true;
            ($this->logger)($message);
        } catch (\Throwable) {
            // logging must not break the app either
        }
    }
}
