<?php

declare(strict_types=1);

namespace Flagport;

use Flagport\Outcomes\Aggregate;
use Flagport\Outcomes\Reporter;
use Flagport\Store\ApcuStore;
use Flagport\Store\MemoryStore;
use Flagport\Store\Store;

/**
 * Flag values for PHP from a Flagport server: one OFREP bulk call per request per context.
 *
 *     $flags = new Flagport\Client(['url' => 'unix:///run/flagport/flagport.sock']);
 *     if ($flags->isEnabled('ui-improvements.mobile-navigation-fix', ['targetingKey' => '42'])) { ... }
 *
 * The first question for a context fetches every flag's value for it (`POST
 * /ofrep/v1/evaluate/flags`); later questions in the same request are array lookups.
 *
 * Fail-safe: nothing here throws into the application. When the server is down, hung, slow
 * or answers garbage, a value comes from, in order: the last good answer for that context
 * (kept in APCu, shared by the FPM pool; TTL `cache_ttl`, at most `cache_max_entries`
 * contexts), the configured default for that flag (`defaults`), the call's `$default`. A
 * circuit breaker (also in APCu) stops calling the server for `breaker_cooldown` seconds after
 * `breaker_threshold` failures, so an outage costs one APCu read per request. Errors are logged
 * once per cool-down for the whole pool.
 *
 * Options (all optional; their defaults are {@see Client::DEFAULT_OPTIONS}):
 *
 * | option               | meaning                                            |
 * |----------------------|----------------------------------------------------|
 * | `url`                | server URL, or `unix:///path.sock`                 |
 * | `eval_token`         | evaluation token (Bearer), when required           |
 * | `connect_timeout_ms` | connection timeout, milliseconds                   |
 * | `timeout_ms`         | whole-call timeout, milliseconds                   |
 * | `transport`          | `auto`: a persistent connection for `unix://` URLs |
 * |                      | ({@see SocketTransport}), curl otherwise; `curl`   |
 * | `defaults`           | flag => default, or callable(string $key): mixed   |
 * | `cache`              | keep last good answers (APCu, else process memory) |
 * | `cache_ttl`          | seconds a last good answer may be served           |
 * | `cache_max_entries`  | contexts kept; beyond it the cache starts afresh   |
 * | `cache_prefix`       | APCu key prefix (one per app sharing a pool)       |
 * | `breaker_threshold`  | failures within `breaker_window` s that open it    |
 * | `breaker_window`     | seconds over which failures are counted            |
 * | `breaker_cooldown`   | seconds the circuit stays open before a probe      |
 * | `local_overrides`    | read `FLAGPORT_OVERRIDES` ({@see Overrides})       |
 * | `overrides`          | that setting as configured (null: the environment) |
 * | `production`         | a production build: overrides ignored (also when   |
 * |                      | `FLAGPORT_ENV=production`)                         |
 *
 * A context is an array of attributes; `targetingKey` is the bucketing unit (a string; an int
 * is sent as its decimal string, absent means `""`: no unit). Other attributes keep their
 * JSON types: an int stays an int, a float stays a float.
 *
 * Fixed values (docs/spec.md, "Fixed flag values and local overrides") answer the keys they
 * name ahead of the server: a developer's `FLAGPORT_OVERRIDES`, read at construction, and
 * {@see override()}. {@see fake()} (what `Flagport::fake()` calls) turns the server off
 * altogether: only fixed values and defaults, no network call.
 */
final class Client
{
    /** Where the current answers came from (see {@see Client::status()}). */
    public const SOURCE_SERVER = 'server';
    public const SOURCE_NOT_MODIFIED = 'not-modified';
    public const SOURCE_LAST_GOOD = 'last-good';
    public const SOURCE_DEFAULTS = 'defaults';
    public const SOURCE_FAKE = 'fake';

    /**
     * Every option and its default: the one list. The Laravel config (config/flagport.php),
     * its service provider and {@see Flagport::client()} read it rather than repeat a value.
     */
    public const DEFAULT_OPTIONS = [
        'url' => 'http://127.0.0.1:8787',
        'eval_token' => null,
        'connect_timeout_ms' => 50,
        'timeout_ms' => 250,
        'transport' => 'auto',
        'defaults' => [],
        'cache' => true,
        'cache_ttl' => 86400,
        'cache_max_entries' => 10000,
        'cache_prefix' => 'flagport',
        'breaker_threshold' => 3,
        'breaker_window' => 30,
        'breaker_cooldown' => 5.0,
        'local_overrides' => true,
        'overrides' => null,
        'production' => false,
    ];

    private const BULK_PATH = '/ofrep/v1/evaluate/flags';
    /**
     * Layout of a cached last good answer (3: the answer's body as the server sent it, which
     * APCu copies as one string, not 50 nested arrays); an entry of another layout is a miss.
     */
    private const CACHE_FORMAT = 3;
    private const JSON_FLAGS = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION
        | JSON_INVALID_UTF8_SUBSTITUTE;

    /** @var array<string, mixed> */
    private array $options;
    private Transport $transport;
    private Store $store;
    private CircuitBreaker $breaker;
    /** @var (callable(string): void) */
    private $logger;
    /** @var (callable(): (array<string, mixed>|null))|null */
    private $contextResolver;

    /** @var array<string, array<string, array<string, mixed>>> context hash => OFREP items by flag key */
    private array $memo = [];
    /**
     * The last context asked about, as the caller passed it, and its answers: a page asks
     * many flags for one context, and comparing the array is cheaper than encoding and
     * hashing it again for every flag.
     *
     * @var array{context: array<string, mixed>, flags: array<string, array<string, mixed>>}|null
     */
    private ?array $lastAsked = null;
    /** @var array{source: string, error: ?string, context: ?string} */
    private array $last = ['source' => self::SOURCE_DEFAULTS, 'error' => null, 'context' => null];
    private int $calls = 0;
    /** The outcome reporter (made by {@see outcomes()}; null: nothing to note). */
    private ?Reporter $reporter = null;
    /** Fixed values answering the keys they name ahead of the server; null: none. */
    private ?FixedFlags $overrides = null;
    /** Faked ({@see fake()}): no server at all, only fixed values and defaults. */
    private bool $faked = false;
    /** @var array<string, int> while faked: flag key => times read (for the assertions) */
    private array $evaluated = [];

    /**
     * @param array<string, mixed> $options see the class docblock
     * @param (callable(): (array<string, mixed>|null))|null $contextResolver the context used when
     *        a call passes none (Laravel: the signed-in user); null means `['targetingKey' => '']`
     * @param Store|null     $store     null: APCu when available, else process memory
     * @param Transport|null $transport null: {@see SocketTransport::forUrl()} for `url` and `transport`
     * @param (callable(string): void)|null $logger receives error messages; null: error_log()
     */
    public function __construct(
        array $options = [],
        ?callable $contextResolver = null,
        ?Store $store = null,
        ?Transport $transport = null,
        ?callable $logger = null,
    ) {
        $this->options = self::options($options);
        $this->logger = $logger ?? static function (string $message): void {
            error_log($message);
        };
        $url = (string) $this->options['url'];
        $kind = $this->options['transport'];
        if ($transport === null && $kind !== 'auto' && $kind !== 'curl') {
            ($this->logger)("flagport: the transport option must be 'auto' or 'curl', got "
                . var_export($kind, true) . '; using curl');
        }
        $this->transport = $transport ?? SocketTransport::forUrl(
            $url,
            $kind === 'auto' ? 'auto' : 'curl',
            (int) $this->options['connect_timeout_ms'],
            (int) $this->options['timeout_ms'],
            $this->options['eval_token'] === null ? null : (string) $this->options['eval_token'],
        );
        $this->store = $store ?? (ApcuStore::available() ? new ApcuStore() : new MemoryStore());
        $this->breaker = new CircuitBreaker(
            $this->store,
            $this->options['cache_prefix'] . ':cb:' . hash('xxh64', $url),
            (int) $this->options['breaker_threshold'],
            (float) $this->options['breaker_cooldown'],
            (int) $this->options['breaker_window'],
        );
        $this->contextResolver = $contextResolver;
        if ($this->options['local_overrides']) {
            // A developer's mistake in the file is shown at once, naming the file and line.
            $setting = $this->options['overrides'];
            $this->overrides = Overrides::fromEnvironment(
                (bool) $this->options['production'],
                $this->logger,
                is_string($setting) ? $setting : null,
            );
        }
    }

    /**
     * Fake the server (tests): answers come only from fixed values (these, and those given
     * to later calls and to {@see override()}), other flags take their defaults, and nothing
     * is sent anywhere: no evaluation request, no outcome report. A developer's
     * `FLAGPORT_OVERRIDES` do not apply to a fake: a test's flags are the test's. Keys read
     * are counted for {@see evaluated()}. Calling it again adds values.
     *
     * @param array<string, mixed> $values flag key => value (false: off)
     * @throws InvalidOverrides for a key or value that cannot be served
     */
    public function fake(array $values = []): self
    {
        if (!$this->faked) {
            $this->faked = true;
            $this->transport = new class () implements Transport {
                public function request(string $method, string $path, ?string $body = null, array $headers = []): HttpResponse
                {
                    throw new TransportException('Flagport is faked: no request is sent');
                }
            };
            $this->reporter = null;
            $this->overrides = null;
            $this->last = ['source' => self::SOURCE_FAKE, 'error' => null, 'context' => null];
        }
        return $this->override($values);
    }

    /**
     * Fix flags for this client (a test's overrides, faked or not): `override('x', false)`
     * or `override(['x' => false, 'y' => 'variant-b'])`. Forgets this request's answers.
     *
     * @param string|array<string, mixed> $key
     * @throws InvalidOverrides for a key or value that cannot be served
     */
    public function override(string|array $key, mixed $value = null): self
    {
        $values = is_array($key) ? $key : [$key => $value];
        $this->overrides = ($this->overrides ?? new FixedFlags())->with($values);
        $this->reset();
        return $this;
    }

    public function isFaked(): bool
    {
        return $this->faked;
    }

    /**
     * While faked: flag key => how many times it was read by isEnabled(), value() or
     * details() (`feature()`, `@feature`, the middleware...); all() counts none.
     *
     * @return array<string, int>
     */
    public function evaluated(): array
    {
        return $this->evaluated;
    }

    /**
     * The options a client runs with: `$options` over {@see DEFAULT_OPTIONS}, an option given
     * as null (an unset environment variable, a config entry left out) taking its default.
     *
     * @param array<string, mixed> $options
     * @return array<string, mixed>
     */
    public static function options(array $options): array
    {
        return array_replace(self::DEFAULT_OPTIONS, array_filter($options, static fn (mixed $value): bool => $value !== null));
    }

    /**
     * Whether a flag is on for the context.
     *
     * A flag is on unless it serves its own off variant (whatever that variant is named), as
     * the server decides for the flag's children: the answer's `metadata.on`, which the server
     * sends for every flag whose values are not plain on/off booleans; a plain on/off flag's
     * boolean value. Without an answer that says (an error, no answer, or a value that is not
     * a boolean from a server that sends no `metadata.on`): the configured default for the
     * flag (cast to bool), else `$default`.
     *
     * @param array<string, mixed>|null $context null: the resolver's context
     */
    public function isEnabled(string $key, ?array $context = null, bool $default = false): bool
    {
        if ($this->faked) {
            $this->evaluated[$key] = ($this->evaluated[$key] ?? 0) + 1;
        }
        try {
            $flag = $this->answers($context)[$key] ?? null;
            if (isset($flag['metadata']['rolloutFlag']) && $this->reporter !== null) {
                $this->reporter->note($flag['metadata']);
            }
            $on = $flag === null ? null : self::isOn($flag);
            if ($on !== null) {
                return $on;
            }
            $configured = $this->configuredDefault($key);
            return $configured === null ? $default : (bool) $configured;
        } catch (\Throwable $error) {
            $this->logError($error);
            return $default;
        }
    }

    /**
     * The flag's value for the context (its JSON type kept), or a default.
     *
     * @param array<string, mixed>|null $context null: the resolver's context
     */
    public function value(string $key, mixed $default = null, ?array $context = null): mixed
    {
        if ($this->faked) {
            $this->evaluated[$key] = ($this->evaluated[$key] ?? 0) + 1;
        }
        try {
            $flag = $this->answers($context)[$key] ?? null;
            if (isset($flag['metadata']['rolloutFlag']) && $this->reporter !== null) {
                $this->reporter->note($flag['metadata']);
            }
            if ($flag !== null && !isset($flag['errorCode'])) {
                return $flag['value'] ?? null;
            }
            return $this->configuredDefault($key) ?? $default;
        } catch (\Throwable $error) {
            $this->logError($error);
            return $default;
        }
    }

    /**
     * Every flag's value for the context: the server's flags, plus configured defaults for
     * flags it did not answer. Flags that failed to evaluate take their configured default
     * (or null).
     *
     * @param array<string, mixed>|null $context null: the resolver's context
     * @return array<string, mixed> flag key => value, sorted by key
     */
    public function all(?array $context = null): array
    {
        try {
            $values = [];
            foreach ($this->answers($context) as $key => $flag) {
                $values[$key] = isset($flag['errorCode']) ? $this->configuredDefault((string) $key) : ($flag['value'] ?? null);
            }
            $defaults = $this->options['defaults'];
            if (is_array($defaults)) {
                foreach ($defaults as $key => $value) {
                    $values[$key] ??= $value;
                }
            }
            ksort($values, SORT_STRING);
            return $values;
        } catch (\Throwable $error) {
            $this->logError($error);
            return [];
        }
    }

    /**
     * Details of one flag's answer: `value`, `variant`, `reason`, `errorCode`, and `source`
     * (server, not-modified, last-good or defaults). Null when there is no answer for it.
     *
     * @param array<string, mixed>|null $context
     * @return array{value: mixed, variant: ?string, reason: ?string, errorCode: ?string, source: string}|null
     */
    public function details(string $key, ?array $context = null): ?array
    {
        if ($this->faked) {
            $this->evaluated[$key] = ($this->evaluated[$key] ?? 0) + 1;
        }
        try {
            $flag = $this->answers($context)[$key] ?? null;
        } catch (\Throwable $error) {
            $this->logError($error);
            return null;
        }
        if ($flag === null) {
            return null;
        }
        if (isset($flag['metadata']['rolloutFlag']) && $this->reporter !== null) {
            $this->reporter->note($flag['metadata']);
        }
        $failed = isset($flag['errorCode']);
        return [
            'value' => $failed ? null : ($flag['value'] ?? null),
            'variant' => !$failed && isset($flag['variant']) ? (string) $flag['variant'] : null,
            'reason' => !$failed && isset($flag['reason']) ? (string) $flag['reason'] : null,
            'errorCode' => $failed ? (string) $flag['errorCode'] : null,
            'source' => $this->last['source'],
        ];
    }

    /**
     * Diagnostics: where the last fetched answers came from, the last error, the breaker
     * state, the number of HTTP calls made by this client and whether the store is shared.
     *
     * @return array{source: string, error: ?string, circuit: string, calls: int, shared_store: bool}
     */
    public function status(): array
    {
        return [
            'source' => $this->last['source'],
            'error' => $this->last['error'],
            'circuit' => $this->breaker->state(),
            'calls' => $this->calls,
            'shared_store' => $this->store->isShared(),
        ];
    }

    /**
     * The reporter of outcome signals for the plan cohorts this client's answers name
     * (docs/spec.md section 13): {@see \Flagport\Laravel\ReportOutcomes} opens and closes
     * a request on it; it posts through this client's transport (URL, token, timeouts) and
     * shares the pool's counts through APCu (`cache_prefix`), per request without APCu.
     */
    public function outcomes(): Reporter
    {
        // The aggregate is made at the first count, after the answer was sent.
        return $this->reporter ??= new Reporter(
            fn (): Aggregate => new Aggregate((string) $this->options['cache_prefix'], $this->store->isShared() && ApcuStore::available()),
            $this->transport,
            $this->logger,
        );
    }

    /**
     * Count the event `$name` with `$labels` (strings) for every plan cohort read so far in
     * the current request (see {@see Reporter::event()}); how many were counted: 0 outside a
     * request or when the name or labels are not ones the wire shape takes (logged). Never
     * throws, never does I/O.
     *
     *     Flagport::report('user_report', ['severity' => 'critical']);
     *
     * @param array<string, string> $labels
     */
    public function report(string $name, array $labels = []): int
    {
        try {
            return $this->outcomes()->event($name, $labels);
        } catch (\Throwable $error) {
            $this->logError($error);
            return 0;
        }
    }

    /** Forget this request's answers (Laravel calls it per request and per queued job). */
    public function reset(): void
    {
        $this->memo = [];
        $this->lastAsked = null;
    }

    /** The circuit breaker (for diagnostics and tests). */
    public function breaker(): CircuitBreaker
    {
        return $this->breaker;
    }

    /**
     * The context as sent: `targetingKey` a string (`""` when absent), other attributes as given.
     *
     * @param array<string, mixed>|null $context
     * @return array<string, mixed>
     */
    public function normalizeContext(?array $context): array
    {
        if ($context === null) {
            $context = $this->contextResolver !== null ? (($this->contextResolver)() ?? []) : [];
        }
        $unit = $context['targetingKey'] ?? '';
        if (is_int($unit) || $unit instanceof \Stringable) {
            $unit = (string) $unit;
        } elseif (!is_string($unit)) {
            $unit = '';
        }
        $context['targetingKey'] = $unit;
        return $context;
    }

    /**
     * The flags for a context: memoized for the request, else fetched, else fail-safe.
     *
     * @param array<string, mixed>|null $context
     * @return array<string, array<string, mixed>> OFREP items by flag key
     */
    private function answers(?array $context): array
    {
        if ($context !== null && $this->lastAsked !== null && $this->lastAsked['context'] === $context) {
            return $this->lastAsked['flags'];
        }
        $asked = $context;
        $body = json_encode((object) $this->normalizeContext($context), self::JSON_FLAGS);
        if ($body === false) {
            throw new \InvalidArgumentException('the context cannot be encoded as JSON: ' . json_last_error_msg());
        }
        $hash = hash('xxh128', $body);
        if (!isset($this->memo[$hash])) {
            $flags = $this->faked ? [] : $this->fetch('{"context":' . $body . '}', $hash);
            // Fixed values answer the keys they name, whatever the server said.
            $this->memo[$hash] = $this->overrides !== null ? $this->overrides->items() + $flags : $flags;
        }
        $flags = $this->memo[$hash];
        if ($asked !== null) {
            $this->lastAsked = ['context' => $asked, 'flags' => $flags];
        }
        return $flags;
    }

    /**
     * @return array<string, array<string, mixed>> OFREP items by flag key
     */
    private function fetch(string $body, string $hash): array
    {
        $useCache = (bool) $this->options['cache'];
        $cacheKey = $this->options['cache_prefix'] . ':lg:' . $hash;
        $stored = $useCache ? $this->store->fetch($cacheKey) : null;
        $cached = $stored;
        if (
            !is_array($cached) || ($cached['format'] ?? null) !== self::CACHE_FORMAT
            || !isset($cached['body'], $cached['at']) || !is_string($cached['body'])
            || $cached['at'] + (int) $this->options['cache_ttl'] < time()
        ) {
            $cached = null;
        } else {
            try {
                $cached = ['flags' => self::parseBulk($cached['body']), 'etag' => $cached['etag'] ?? null];
            } catch (TransportException) {
                $cached = null; // a damaged entry is a miss, replaced by the next good answer
            }
        }
        if (!$this->breaker->allow()) {
            return $this->failSafe($cached, 'circuit open: not calling ' . $this->options['url'], false);
        }
        try {
            $this->calls++;
            $headers = $cached !== null && $cached['etag'] !== null ? ['If-None-Match' => (string) $cached['etag']] : [];
            $response = $this->transport->request('POST', self::BULK_PATH, $body, $headers);
            if ($response->status === 304 && $cached !== null) {
                $this->breaker->success();
                $this->last = ['source' => self::SOURCE_NOT_MODIFIED, 'error' => null, 'context' => $hash];
                return $cached['flags'];
            }
            if ($response->status !== 200) {
                throw new TransportException(sprintf(
                    'HTTP %d from %s: %s',
                    $response->status,
                    $this->options['url'],
                    TransportException::excerpt($response->body, 200),
                ));
            }
            $flags = self::parseBulk($response->body);
        } catch (\Throwable $error) {
            return $this->failSafe($cached, $error->getMessage(), true);
        }
        $this->breaker->success();
        $this->last = ['source' => self::SOURCE_SERVER, 'error' => null, 'context' => $hash];
        if ($useCache && ($cached === null || $cached['etag'] !== $response->etag || $response->etag === null)) {
            // An entry that is there but unusable (another layout) is replaced, not added.
            $this->remember($cacheKey, $stored !== null, [
                'format' => self::CACHE_FORMAT, 'body' => $response->body, 'etag' => $response->etag, 'at' => time(),
            ]);
        }
        return $flags;
    }

    /**
     * Decode an OFREP bulk answer into its items by flag key, as the server sent them (an item
     * is read only when a flag is asked about: a page asks a few of many).
     *
     * @return array<string, array<string, mixed>>
     * @throws TransportException when the body is not a bulk answer
     */
    public static function parseBulk(string $body): array
    {
        $data = json_decode($body, true, 64);
        if (!is_array($data) || !isset($data['flags']) || !is_array($data['flags'])) {
            throw new TransportException('the server answered something that is not an OFREP bulk answer: '
                . TransportException::excerpt($body, 120));
        }
        $flags = [];
        foreach ($data['flags'] as $item) {
            if (is_array($item) && isset($item['key']) && is_string($item['key'])) {
                $flags[$item['key']] = $item;
            }
        }
        return $flags;
    }

    /**
     * Whether an answered flag is on: its `metadata.on` (sent for every flag whose values are
     * not plain on/off booleans), else its boolean value; null when the answer does not say
     * (an error, or a value that is not a boolean from a server that sends no `metadata.on`).
     *
     * @param array<string, mixed> $item
     */
    private static function isOn(array $item): ?bool
    {
        if (isset($item['errorCode'])) {
            return null;
        }
        $on = $item['metadata']['on'] ?? null;
        if (is_bool($on)) {
            return $on;
        }
        $value = $item['value'] ?? null;
        return is_bool($value) ? $value : null;
    }

    /**
     * @param array{flags: array<string, array<string, mixed>>, etag: ?string}|null $cached
     * @return array<string, array<string, mixed>> OFREP items by flag key
     */
    private function failSafe(?array $cached, string $error, bool $countFailure): array
    {
        if ($countFailure) {
            $opened = $this->breaker->failure();
            if ($this->breaker->shouldLog()) {
                ($this->logger)(sprintf(
                    'flagport: %s; serving %s%s',
                    $error,
                    $cached !== null ? 'last good values' : 'defaults',
                    $opened ? sprintf('; circuit open for %.1f s', (float) $this->options['breaker_cooldown']) : '',
                ));
            }
        }
        $this->last = [
            'source' => $cached !== null ? self::SOURCE_LAST_GOOD : self::SOURCE_DEFAULTS,
            'error' => $error,
            'context' => null,
        ];
        return $cached['flags'] ?? [];
    }

    /**
     * Store a last good answer, keeping at most `cache_max_entries` contexts: past the cap the
     * cache starts afresh (one delete by prefix), which keeps the contexts seen recently.
     *
     * @param array<string, mixed> $entry
     */
    private function remember(string $key, bool $exists, array $entry): void
    {
        $ttl = (int) $this->options['cache_ttl'];
        if ($exists) {
            $this->store->store($key, $entry, $ttl);
            return;
        }
        if (!$this->store->add($key, $entry, $ttl)) {
            return;
        }
        $counter = $this->options['cache_prefix'] . ':lgcount';
        if ($this->store->increment($counter, $ttl) > (int) $this->options['cache_max_entries']) {
            $this->store->deletePrefix($this->options['cache_prefix'] . ':lg:');
            $this->store->delete($counter);
            $this->store->add($key, $entry, $ttl);
            $this->store->increment($counter, $ttl);
        }
    }

    private function configuredDefault(string $key): mixed
    {
        $defaults = $this->options['defaults'];
        if (is_callable($defaults)) {
            return $defaults($key);
        }
        return is_array($defaults) ? ($defaults[$key] ?? null) : null;
    }

    private function logError(\Throwable $error): void
    {
        try {
            if ($this->breaker->shouldLog()) {
                ($this->logger)('flagport: unexpected ' . get_class($error) . ': ' . $error->getMessage());
            }
        } catch (\Throwable) {
            // Logging must not break the app either.
        }
    }
}
