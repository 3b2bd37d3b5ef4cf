<?php

declare(strict_types=1);

namespace Flagport\Tests\Laravel;

use Flagport\Client;
use Flagport\CurlTransport;
use Flagport\Laravel\FlagportServiceProvider;
use Flagport\Store\MemoryStore;
use Illuminate\Config\Repository;
use Illuminate\Container\Container;
use Illuminate\Contracts\Console\Kernel as ConsoleKernel;
use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Foundation\Application;
use Illuminate\Foundation\Auth\User;
use Illuminate\Support\Facades\Facade;
use PHPUnit\Framework\TestCase;

/**
 * A Laravel application booted from Debian's php-laravel-framework (no Testbench): HTTP and
 * console kernels, exception handler, in-memory config, views, translation, a request guard
 * whose user the test sets, and the Flagport provider. Needs FLAGPORT_TEST_LARAVEL_URL.
 */
abstract class LaravelTestCase extends TestCase
{
    protected Application $app;
    protected ?User $user = null;
    protected string $dir;

    /** @param array<string, mixed> $features config/features.php */
    protected function boot(string $url, array $features = [], array $flagport = []): Application
    {
        require_once 'Illuminate/autoload.php';
        MemoryStore::flush();
        CurlTransport::closeAll();
        $this->dir = sys_get_temp_dir() . '/flagport-laravel-' . getmypid() . '-' . bin2hex(random_bytes(4));
        @mkdir($this->dir . '/views', 0777, true);
        @mkdir($this->dir . '/compiled', 0777, true);
        @mkdir($this->dir . '/bootstrap/cache', 0777, true);

        $app = new Application($this->dir);
        $app->singleton(HttpKernel::class, \Illuminate\Foundation\Http\Kernel::class);
        $app->singleton(ConsoleKernel::class, \Illuminate\Foundation\Console\Kernel::class);
        $app->singleton(ExceptionHandler::class, \Illuminate\Foundation\Exceptions\Handler::class);
        $app->instance('config', new Repository([
            'app' => [
                'name' => 'portal', 'env' => 'testing', 'debug' => false, 'url' => 'http://localhost',
                'key' => 'base64:' . base64_encode(str_repeat('k', 32)), 'cipher' => 'AES-256-CBC',
                'locale' => 'en', 'fallback_locale' => 'en', 'providers' => [], 'aliases' => [],
            ],
            'view' => ['paths' => [$this->dir . '/views'], 'compiled' => $this->dir . '/compiled'],
            'auth' => ['defaults' => ['guard' => 'test'], 'guards' => ['test' => ['driver' => 'test-user']]],
            'logging' => ['default' => 'null', 'channels' => ['null' => ['driver' => 'monolog', 'handler' => \Monolog\Handler\NullHandler::class]]],
            'features' => $features,
            'flagport' => $flagport + [
                'url' => $url,
                'admin_token' => getenv('FLAGPORT_TEST_ADMIN_TOKEN') ?: null,
                'cache' => ['prefix' => 'laravel-' . bin2hex(random_bytes(4))],
            ],
        ]));
        $app->detectEnvironment(static fn (): string => 'testing');
        Facade::clearResolvedInstances();
        Facade::setFacadeApplication($app);
        foreach ([
            \Illuminate\Filesystem\FilesystemServiceProvider::class,
            \Illuminate\View\ViewServiceProvider::class,
            \Illuminate\Translation\TranslationServiceProvider::class,
            \Illuminate\Auth\AuthServiceProvider::class,
            FlagportServiceProvider::class,
        ] as $provider) {
            $app->register($provider);
        }
        $app->bootstrapWith([
            \Illuminate\Foundation\Bootstrap\RegisterFacades::class,
            \Illuminate\Foundation\Bootstrap\SetRequestForConsole::class,
            \Illuminate\Foundation\Bootstrap\BootProviders::class,
        ]);
        $app['auth']->viaRequest('test-user', fn () => $this->user);
        Container::setInstance($app);
        return $this->app = $app;
    }

    protected function tearDown(): void
    {
        if (isset($this->dir)) {
            exec('rm -rf ' . escapeshellarg($this->dir));
        }
        Facade::clearResolvedInstances();
        \Flagport\Flagport::setClient(null);
    }

    /** @param array<string, mixed> $attributes */
    protected function actingAs(array $attributes): void
    {
        $user = new User();
        $user->forceFill($attributes);
        $this->user = $user;
        $this->app['auth']->forgetGuards();
        $this->app->make(Client::class)->reset();
    }

    protected function view(string $name, string $blade): string
    {
        file_put_contents("{$this->dir}/views/$name.blade.php", $blade);
        return $this->app['view']->make($name)->render();
    }

    protected static function env(string $name): string
    {
        $value = getenv($name);
        if (!is_string($value) || $value === '') {
            self::markTestSkipped("$name is not set (run through tests/php/test_php_bridge.py)");
        }
        return $value;
    }
}
