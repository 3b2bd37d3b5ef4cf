<?php

declare(strict_types=1);

namespace Flagport\Laravel;

use Flagport\AdminClient;
use Flagport\Client;
use Flagport\FeaturesScript;
use Flagport\Laravel\Console\FeatureDisableCommand;
use Flagport\Laravel\Console\FeatureEnableCommand;
use Flagport\Laravel\Console\FeatureStatsCommand;
use Illuminate\Contracts\Foundation\Application;
use Illuminate\Support\ServiceProvider;

/**
 * Flagport for Laravel (8 or later):
 *
 * - `Flagport\Client` as a singleton (alias `flagport`), configured from `config/flagport.php`,
 *   whose context is the signed-in user (see {@see FlagportServiceProvider::context()}) and whose
 *   per-request answers are forgotten after each HTTP request and before each queued job;
 * - the `feature()` helper (src/helpers.php), Blade `@feature('key') ... @else ... @endfeature`
 *   and `@flagportScript` (`window.features`);
 * - route middleware `feature:<key>` (404 when off);
 * - the terminable middleware {@see ReportOutcomes} (alias `flagport.outcomes`; add it to the
 *   Kernel's global `$middleware`) reporting requests' outcomes for guarded rollouts, and
 *   `Flagport::report('user_report', ['severity' => 'critical'])`;
 * - artisan `feature:enable {key} {--percentage=}`, `feature:disable {key}` and
 *   `feature:stats {key} {--since=}`;
 * - `Flagport::fake([...])` for tests (it fakes this singleton, so every piece above reads the
 *   fake) and a developer's `FLAGPORT_OVERRIDES`, ignored in the `production` environment.
 */
final class FlagportServiceProvider extends ServiceProvider
{
    public function register(): void
    {
        $this->mergeConfigFrom(__DIR__ . '/../../config/flagport.php', 'flagport');

        $this->app->singleton(Client::class, static function (Application $app): Client {
            $config = (array) $app['config']->get('flagport', []);
            $defaultsConfig = $config['defaults_config'] ?? null;
            $defaults = is_string($defaultsConfig) && $defaultsConfig !== ''
                ? static function (string $key) use ($app, $defaultsConfig): mixed {
                    $value = $app['config']->get($defaultsConfig . '.' . $key);
                    return is_array($value) ? ($value['_value'] ?? null) : $value;
                }
                : [];
            // Left out of the config: Client::DEFAULT_OPTIONS (null means "the default").
            return new Client(
                [
                    'url' => $config['url'] ?? null,
                    'transport' => $config['transport'] ?? null,
                    'eval_token' => $config['eval_token'] ?? null,
                    'connect_timeout_ms' => $config['timeouts']['connect_ms'] ?? null,
                    'timeout_ms' => $config['timeouts']['total_ms'] ?? null,
                    'defaults' => $defaults,
                    'cache' => $config['cache']['enabled'] ?? null,
                    'cache_ttl' => $config['cache']['ttl'] ?? null,
                    'cache_max_entries' => $config['cache']['max_entries'] ?? null,
                    'cache_prefix' => $config['cache']['prefix'] ?? null,
                    'breaker_threshold' => $config['breaker']['threshold'] ?? null,
                    'breaker_window' => $config['breaker']['window'] ?? null,
                    'breaker_cooldown' => $config['breaker']['cooldown'] ?? null,
                    // FLAGPORT_OVERRIDES is a developer's: never read in production.
                    'overrides' => $config['overrides'] ?? null,
                    'production' => $app->environment('production'),
                ],
                static fn (): array => self::context($app),
                null,
                null,
                static function (string $message) use ($app): void {
                    try {
                        $app['log']->warning($message);
                    } catch (\Throwable) {
                        error_log($message);
                    }
                },
            );
        });
        $this->app->alias(Client::class, 'flagport');
        // One instance: Laravel calls terminate() on the instance it resolves then.
        $this->app->singleton(ReportOutcomes::class);

        $this->app->singleton(AdminClient::class, static function (Application $app): AdminClient {
            $config = (array) $app['config']->get('flagport', []);
            return new AdminClient(
                (string) ($config['url'] ?? Client::DEFAULT_OPTIONS['url']),
                isset($config['admin_token']) ? (string) $config['admin_token'] : null,
                (int) ($config['timeouts']['admin_ms'] ?? AdminClient::DEFAULT_TIMEOUT_MS),
            );
        });
    }

    public function boot(): void
    {
        $this->publishes([__DIR__ . '/../../config/flagport.php' => $this->app->configPath('flagport.php')], 'flagport-config');

        $this->callAfterResolving('blade.compiler', static function ($blade): void {
            /** @var \Illuminate\View\Compilers\BladeCompiler $blade */
            $blade->if('feature', static fn (string $key, bool $default = false): bool => app(Client::class)->isEnabled($key, null, $default));
            $blade->directive('flagportScript', static fn (string $expression): string => '<?php echo \\' . self::class . '::script(' . ($expression === '' ? 'null' : $expression) . '); ?>');
        });

        $this->callAfterResolving('router', static function ($router): void {
            /** @var \Illuminate\Routing\Router $router */
            $router->aliasMiddleware('feature', EnsureFeatureEnabled::class);
            $router->aliasMiddleware('flagport.outcomes', ReportOutcomes::class);
        });
        $this->registerMonitorRoute();

        if ($this->app->runningInConsole()) {
            $this->commands([FeatureEnableCommand::class, FeatureDisableCommand::class, FeatureStatsCommand::class]);
        }

        // Answers are memoized per request: forget them between requests (long-running servers)
        // and before each queued job (a worker handles many users).
        $reset = fn () => $this->app->resolved(Client::class) ? $this->app->make(Client::class)->reset() : null;
        $events = $this->app['events'];
        $events->listen(\Illuminate\Foundation\Http\Events\RequestHandled::class, $reset);
        $events->listen(\Illuminate\Queue\Events\JobProcessing::class, $reset);
    }

    /**
     * `flagport.monitor.path` (the runbook's /admin/deployment-monitor) redirects to Flagport's
     * deployment monitor, behind `flagport.monitor.middleware`. A URL that is not an absolute
     * http(s) URL registers no route and is logged: a misconfigured link must not break the app.
     */
    private function registerMonitorRoute(): void
    {
        $config = $this->app['config'];
        $url = $config->get('flagport.monitor.url');
        if ($url === null || $url === '') {
            return;
        }
        $scheme = is_string($url) ? parse_url($url, PHP_URL_SCHEME) : null;
        $host = is_string($url) ? parse_url($url, PHP_URL_HOST) : null;
        if (!in_array($scheme, ['http', 'https'], true) || !is_string($host) || $host === '') {
            error_log('flagport: flagport.monitor.url must be an absolute http(s) URL; no '
                . 'deployment-monitor route registered');
            return;
        }
        $path = (string) $config->get('flagport.monitor.path', '/admin/deployment-monitor');
        $middleware = (array) $config->get('flagport.monitor.middleware', []);
        $this->callAfterResolving('router', static function ($router) use ($url, $path, $middleware): void {
            /** @var \Illuminate\Routing\Router $router */
            $router->get($path, static fn () => new \Illuminate\Http\RedirectResponse($url, 302))
                ->middleware($middleware)
                ->name('flagport.monitor');
        });
    }

    /**
     * The evaluation context: the signed-in user's id as `targetingKey` plus the configured
     * attributes (`flagport.context.attributes`, types kept); a guest's session id; else "".
     *
     * @return array<string, mixed>
     */
    public static function context(Application $app): array
    {
        $user = null;
        try {
            if ($app->bound('auth')) {
                $user = $app['auth']->user();
            }
        } catch (\Throwable) {
            $user = null; // no guard configured: treat as a guest
        }
        if ($user !== null) {
            $context = ['targetingKey' => (string) $user->getAuthIdentifier()];
            foreach ((array) $app['config']->get('flagport.context.attributes', []) as $attribute) {
                $value = $user instanceof \Illuminate\Database\Eloquent\Model ? $user->getAttribute($attribute) : ($user->{$attribute} ?? null);
                if ($value !== null) {
                    $context[$attribute] = $value instanceof \BackedEnum ? $value->value : $value;
                }
            }
            return $context;
        }
        try {
            $request = $app->bound('request') ? $app['request'] : null;
            if ($request !== null && $request->hasSession()) {
                return ['targetingKey' => (string) $request->session()->getId()];
            }
        } catch (\Throwable) {
            // fall through: no unit
        }
        return ['targetingKey' => ''];
    }

    /**
     * The `<script>` that `@flagportScript` prints: the configured flags for the current user,
     * nested by key, JSON escaped against `</script>`.
     *
     * @param array{only?: list<string>|null, except?: list<string>, nonce?: string}|null $options overrides `flagport.script`
     */
    public static function script(?array $options = null): string
    {
        try {
            $app = \Illuminate\Container\Container::getInstance();
            $config = ($options ?? []) + (array) $app['config']->get('flagport.script', []);
            $values = FeaturesScript::select(
                $app->make(Client::class)->all(),
                $config['only'] ?? null,
                (array) ($config['except'] ?? []),
            );
            return FeaturesScript::render($values, $config['nonce'] ?? null);
        } catch (\Throwable $error) {
            error_log('flagport: @flagportScript: ' . $error->getMessage());
            return '<script>window.features = {};</script>';
        }
    }
}
