<?php

declare(strict_types=1);

namespace Flagport;

/**
 * The application's shared {@see Client}, for the global `feature()` helper.
 *
 * In Laravel the service provider's singleton is used. Elsewhere call
 * `Flagport::setClient(new Client([...]))` once at bootstrap; without that, a client is built
 * from the environment (`FLAGPORT_URL`, `FLAGPORT_EVAL_TOKEN`) on first use.
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
