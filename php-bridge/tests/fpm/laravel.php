<?php

/**
 * A minimal Laravel front controller for FPM (the browser and outcome tests, benchmarks):
 * Debian's Laravel 8, the Flagport provider, a guard whose user id is the `user` query
 * parameter, and Blade pages from views/. FastCGI params: FLAGPORT_URL, FLAGPORT_APP_DIR
 * (writable dir for compiled views), FLAGPORT_OUTCOMES=1 (the global ReportOutcomes
 * middleware, as an app's Kernel would list it), PORTAL_NEW_UI_BROKEN=1 (the portal page's
 * new dropdown throws: the release gone bad), FLAGPORT_BENCH_SEQ (benchmarks: the request's
 * busy time in this script, terminate() included, is left in APCu under `fp-bench:busy`
 * with that number, for busy.php to read from another worker).
 */

declare(strict_types=1);

define('LARAVEL_START', microtime(true)); // as Laravel's public/index.php
$benchStarted = hrtime(true);

require_once 'Illuminate/autoload.php';
require __DIR__ . '/../../autoload.php';

use Illuminate\Foundation\Application;
use Illuminate\Foundation\Auth\User;
use Illuminate\Http\Request;

$dir = (string) ($_SERVER['FLAGPORT_APP_DIR'] ?? sys_get_temp_dir() . '/flagport-fpm-app');
foreach (['compiled', 'bootstrap/cache'] as $sub) {
    if (!is_dir("$dir/$sub")) {
        @mkdir("$dir/$sub", 0777, true);
    }
}

$app = new Application($dir);
$app->singleton(Illuminate\Contracts\Http\Kernel::class, Illuminate\Foundation\Http\Kernel::class);
$app->singleton(Illuminate\Contracts\Debug\ExceptionHandler::class, Illuminate\Foundation\Exceptions\Handler::class);
$app->instance('config', new Illuminate\Config\Repository([
    'app' => [
        'name' => 'portal', 'env' => 'production', 'debug' => false, 'url' => 'http://localhost',
        'locale' => 'en', 'fallback_locale' => 'en', 'providers' => [], 'aliases' => [],
    ],
    'view' => ['paths' => [__DIR__ . '/views'], 'compiled' => "$dir/compiled"],
    'auth' => ['defaults' => ['guard' => 'portal'], 'guards' => ['portal' => ['driver' => 'query-user']]],
    'logging' => ['default' => 'stderr', 'channels' => ['stderr' => ['driver' => 'errorlog']]],
    'features' => ['ui-improvements' => ['dropdown-fixes' => false]],
    'flagport' => ['url' => (string) ($_SERVER['FLAGPORT_URL'] ?? ''), 'cache' => ['prefix' => 'browser']],
]));
$app->detectEnvironment(static fn (): string => 'production');
foreach ([
    Illuminate\Filesystem\FilesystemServiceProvider::class,
    Illuminate\View\ViewServiceProvider::class,
    Illuminate\Translation\TranslationServiceProvider::class,
    Illuminate\Auth\AuthServiceProvider::class,
    Flagport\Laravel\FlagportServiceProvider::class,
] as $provider) {
    $app->register($provider);
}
$app->bootstrapWith([
    Illuminate\Foundation\Bootstrap\RegisterFacades::class,
    Illuminate\Foundation\Bootstrap\BootProviders::class,
]);
$app['auth']->viaRequest('query-user', static function (Request $request): ?User {
    $id = $request->query('user');
    if (!is_string($id) || $id === '') {
        return null;
    }
    $user = new User();
    $user->forceFill(['id' => (int) $id, 'company_id' => 7, 'role' => 'member']);
    return $user;
});

$router = $app['router'];
$router->get('/', static fn () => view('features'));
$router->get('/bare', static fn () => view('bare'));
// The portal page of the guarded rollout (tests/php/test_php_outcomes.py): it reads only
// `ui-improvements.dropdown-fixes`; `status` sets the answer's status, `report` reports a
// `user_report` event with that severity after the page was rendered, `fatal=1` ends the
// request in a PHP fatal error (memory exhausted) after it.
$router->get('/portal', static function (Request $request) {
    $html = view('portal', ['broken' => ($_SERVER['PORTAL_NEW_UI_BROKEN'] ?? '') === '1'])->render();
    $severity = $request->query('report');
    if (is_string($severity) && $severity !== '') {
        Flagport\Flagport::report('user_report', ['severity' => $severity]);
    }
    if ($request->query('fatal') === '1') {
        $hog = str_repeat('x', 1024 * 1024 * 1024); // beyond any memory_limit the tests set
    }
    return response($html, (int) $request->query('status', '200'));
});
$router->get('/beta', static fn () => 'beta')->middleware('feature:ui-improvements.dropdown-fixes');

$kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);
if (($_SERVER['FLAGPORT_OUTCOMES'] ?? '') === '1') {
    $kernel->pushMiddleware(Flagport\Laravel\ReportOutcomes::class);
}
$request = Request::capture();
$response = $kernel->handle($request);
$response->send();
$kernel->terminate($request, $response);
if (($_SERVER['FLAGPORT_BENCH_SEQ'] ?? '') !== '' && function_exists('apcu_store')) {
    apcu_store('fp-bench:busy', [(string) $_SERVER['FLAGPORT_BENCH_SEQ'], hrtime(true) - $benchStarted]);
}
