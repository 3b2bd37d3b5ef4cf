<?php

declare(strict_types=1);

namespace Flagport;

/**
 * The application's shared {@see Client}, for the global `feature()` helper.
 *
 * In Laravel the service provider's singleton is used. Elsewhere call
 * `Flagport::setClient(new Client([...]))` once at bootstrap; without that, a client is built
 * from the environment (`FLAGPORT_URL`, `FLAGPORT_EVAL_TOKEN`) on first use.
 *
 * Testing, as Laravel's own fakes read:
 *
 *     Flagport::fake(['ui-improvements' => true, 'checkout' => 'variant-b']);
 *     $this->get('/')->assertSee('new navigation');
 *     Flagport::override('ui-improvements', false);   // or Flagport::fake()->override(...)
 *     Flagport::assertEvaluated('ui-improvements');
 *
 * In Laravel the fake is the container's client, faked: every consumer (feature(), Blade's
 * `@feature`, the `feature:` middleware, ReportOutcomes, `@flagportScript`) reads it, and as
 * the application is built afresh for each test, nothing carries over to the next. Outside
 * Laravel the fake is this class's client: call `Flagport::setClient(null)` in tearDown().
 */
final class Flagport
{
    private static ?Client $client = null;

    public static function setClient(?Client $client): void
    {
        self::$client = $client;
    }

    /**
     * `Flagport::report('user_report', ['severity' => 'critical'])`: an event counted for the
     * plan cohorts read in the current request ({@see Client::report()}). Never throws.
     *
     * @param array<string, string> $labels
     */
    public static function report(string $name, array $labels = []): int
    {
        try {
            return self::client()->report($name, $labels);
        } catch (\Throwable $error) {
            error_log('flagport: report(): ' . $error->getMessage());
            return 0;
        }
    }

    /**
     * Fake Flagport (tests): the shared client answers only `$flags` (flag key => value, false:
     * off) and other fixed values, other flags their defaults, with no server and no network
     * call ({@see Client::fake()}). Again: adds values. Returns the faked client.
     *
     * @param array<string, mixed> $flags
     */
    public static function fake(array $flags = []): Client
    {
        if (self::$client === null && !self::inLaravel()) {
            // Outside Laravel, with no client set: a fake of its own (not the environment's,
            // which would read the developer's local overrides).
            self::$client = new Client(['local_overrides' => false]);
        }
        return self::client()->fake($flags);
    }

    /**
     * Fix one flag (`override('x', false)`) or several (`override(['x' => true])`) on the
     * shared client, faked or not: this test's answer for those keys.
     *
     * @param string|array<string, mixed> $key
     */
    public static function override(string|array $key, mixed $value = null): Client
    {
        return self::client()->override($key, $value);
    }

    /** Assert that the faked client read `$key` (at least once; exactly `$times` if given). */
    public static function assertEvaluated(string $key, ?int $times = null): void
    {
        $read = self::fakedClient()->evaluated()[$key] ?? 0;
        if ($times === null) {
            \PHPUnit\Framework\Assert::assertGreaterThan(0, $read, "The flag [$key] was not evaluated.");
        } else {
            \PHPUnit\Framework\Assert::assertSame($times, $read, "The flag [$key] was evaluated $read times instead of $times times.");
        }
    }

    /** Assert that the faked client never read `$key`. */
    public static function assertNotEvaluated(string $key): void
    {
        $read = self::fakedClient()->evaluated()[$key] ?? 0;
        \PHPUnit\Framework\Assert::assertSame(0, $read, "The flag [$key] was evaluated $read times.");
    }

    private static function fakedClient(): Client
    {
        $client = self::client();
        if (!$client->isFaked()) {
            throw new \LogicException('Flagport is not faked: call Flagport::fake() first');
        }
        return $client;
    }

    private static function inLaravel(): bool
    {
        return class_exists(\Illuminate\Container\Container::class, false)
            && \Illuminate\Container\Container::getInstance()->bound(Client::class);
    }

    public static function client(): Client
    {
        if (self::$client !== null) {
            return self::$client;
        }
        if (function_exists('app') && class_exists(\Illuminate\Container\Container::class)) {
            $container = \Illuminate\Container\Container::getInstance();
            if ($container->bound(Client::class)) {
                return $container->make(Client::class);
            }
        }
        $url = getenv('FLAGPORT_URL');
        $token = getenv('FLAGPORT_EVAL_TOKEN');
        // An unset or empty variable: Client::DEFAULT_OPTIONS.
        return self::$client = new Client([
            'url' => is_string($url) && $url !== '' ? $url : null,
            'eval_token' => is_string($token) && $token !== '' ? $token : null,
        ]);
    }
}
