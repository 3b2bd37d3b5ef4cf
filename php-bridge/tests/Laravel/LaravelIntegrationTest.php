<?php

declare(strict_types=1);

namespace Flagport\Tests\Laravel;

use Flagport\Bucketing;
use Flagport\Client;
use Flagport\Flagport;
use Flagport\Laravel\ReportOutcomes;
use Illuminate\Contracts\Console\Kernel as ConsoleKernel;
use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Http\Request;

/**
 * The Laravel pieces against a real server (its own, started by the harness, seeded with the
 * portal's flags): provider and config, context from the user, feature(), Blade, the script,
 * middleware and the artisan commands of the runbook.
 */
final class LaravelIntegrationTest extends LaravelTestCase
{
    private function userIn(bool $cohort, int $percentage = 10): int
    {
        for ($id = 1; ; $id++) {
            if (Bucketing::included('ui-improvements', (string) $id, $percentage) === $cohort) {
                return $id;
            }
        }
    }

    private function artisan(string $command, array $arguments = []): array
    {
        $kernel = $this->app->make(ConsoleKernel::class);
        $code = $kernel->call($command, $arguments);
        return [$code, $kernel->output()];
    }

    public function testThePublishedConfigCarriesTheClientDefaults(): void
    {
        $this->boot('http://127.0.0.1:9');
        $defaults = Client::DEFAULT_OPTIONS;
        $config = $this->app['config'];
        self::assertSame(
            ['connect_ms' => $defaults['connect_timeout_ms'], 'total_ms' => $defaults['timeout_ms'], 'admin_ms' => \Flagport\AdminClient::DEFAULT_TIMEOUT_MS],
            $config->get('flagport.timeouts'),
        );
        self::assertSame(
            ['threshold' => $defaults['breaker_threshold'], 'window' => $defaults['breaker_window'], 'cooldown' => $defaults['breaker_cooldown']],
            $config->get('flagport.breaker'),
        );
    }

    public function testRunbookThroughArtisanFeatureAndBlade(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        $in = $this->userIn(true);
        $out = $this->userIn(false);

        [$code, $output] = $this->artisan('feature:enable', ['key' => 'ui-improvements', '--percentage' => '10']);
        self::assertSame(0, $code, $output);
        self::assertStringContainsString('ui-improvements enabled at 10 %', $output);
        // Waited for both workers of the server: whichever answers next serves the 10 %.
        self::assertMatchesRegularExpression('/snapshot version \d+ applied by 2 worker\(s\) on 1 instance\(s\)/', $output);

        $this->actingAs(['id' => $in, 'company_id' => 7, 'role' => 'admin']);
        self::assertSame(['targetingKey' => (string) $in, 'company_id' => 7, 'role' => 'admin'], \Flagport\Laravel\FlagportServiceProvider::context($this->app));
        self::assertTrue(feature('ui-improvements.mobile-navigation-fix'));
        self::assertTrue(feature_value('ui-improvements.dropdown-fixes'));
        $blade = "@feature('ui-improvements.dropdown-fixes') NEW @else OLD @endfeature|@flagportScript";
        $html = $this->view('page', $blade);
        self::assertStringContainsString('NEW', $html);
        self::assertStringNotContainsString('OLD', $html);
        self::assertStringContainsString('"ui-improvements":{"_value":true,"dropdown-fixes":true,', $html);
        self::assertSame(1, $this->app->make(Client::class)->status()['calls'], 'one bulk call for the request');

        $this->actingAs(['id' => $out, 'company_id' => 7]);
        self::assertFalse(feature('ui-improvements.mobile-navigation-fix'));
        self::assertStringContainsString('OLD', $this->view('page2', $blade));

        [$code, $output] = $this->artisan('feature:disable', ['key' => 'ui-improvements']);
        self::assertSame(0, $code, $output);
        self::assertStringContainsString('ui-improvements disabled', $output);
        self::assertStringContainsString('applied by 2 worker(s)', $output);
        $this->actingAs(['id' => $in]);
        self::assertFalse(feature('ui-improvements.mobile-navigation-fix'));
    }

    public function testArtisanErrors(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        [$code, $output] = $this->artisan('feature:enable', ['key' => 'no-such-flag']);
        self::assertSame(1, $code, $output);
        self::assertStringContainsString('404', $output);
        [$code] = $this->artisan('feature:enable', ['key' => 'ui-improvements', '--percentage' => '120']);
        self::assertSame(2, $code);
        // A bad --timeout is refused before any request: the flag is not changed.
        [$code, $output] = $this->artisan('feature:enable', ['key' => 'ui-improvements', '--percentage' => '40', '--timeout' => 'soon']);
        self::assertSame(2, $code, $output);
        self::assertStringContainsString("--timeout must be a number of seconds from 0 to 3600, got 'soon'", $output);
        [$code, $output] = $this->artisan('feature:disable', ['key' => 'ui-improvements', '--no-wait' => true]);
        self::assertSame(0, $code, $output);
        self::assertStringNotContainsString('applied by', $output);
        $flag = $this->app->make(\Flagport\AdminClient::class)->disable('ui-improvements')['flag'];
        self::assertNotEquals(40, $flag['percentage'], 'the enable refused for its --timeout changed nothing');
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'), [], ['admin_token' => 'wrong']);
        [$code] = $this->artisan('feature:disable', ['key' => 'ui-improvements']);
        self::assertSame(4, $code);
        $this->boot(self::env('FLAGPORT_TEST_DEAD_URL'));
        [$code, $output] = $this->artisan('feature:disable', ['key' => 'ui-improvements']);
        self::assertSame(3, $code);
        self::assertStringContainsString('cannot reach Flagport', $output);
    }

    public function testArtisanStats(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        $this->actingAs(['id' => 3]);
        feature('ui-improvements');
        [$code, $output] = $this->artisan('feature:stats', ['key' => 'ui-improvements', '--since' => '2h']);
        self::assertSame(0, $code, $output);
        self::assertStringContainsString('ui-improvements: ', $output);
        self::assertStringContainsString('units served on, of', $output);
        [$code, $output] = $this->artisan('feature:stats', ['key' => 'no-such-flag']);
        self::assertSame(1, $code, $output);
        self::assertStringContainsString("'no-such-flag'", $output);
        [$code, $output] = $this->artisan('feature:stats', ['key' => 'ui-improvements', '--since' => 'soon']);
        self::assertSame(2, $code, $output);
        [$code, $output] = $this->artisan('feature:stats', ['key' => 'ui-improvements', '--since' => '30d']);
        self::assertSame(1, $code, $output);
        self::assertStringContainsString('more than 7 days back', $output);
    }

    public function testTheOutcomeMiddlewareIsRegisteredAndOpensAndClosesTheRequest(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        self::assertSame($this->app->make(ReportOutcomes::class), $this->app->make(ReportOutcomes::class), 'terminate() on the instance handle() ran on');
        $outcomes = $this->app->make(Client::class)->outcomes();
        $seen = [];
        $this->app['router']->get('/page', static function () use ($outcomes, &$seen): string {
            $seen[] = $outcomes->isOpen();
            $seen[] = Flagport::report('user_report', ['severity' => 'critical']); // no plan read: 0
            return feature('ui-improvements.dropdown-fixes') ? 'new' : 'old';
        })->middleware('flagport.outcomes');
        $kernel = $this->app->make(HttpKernel::class);
        $this->actingAs(['id' => 5]);
        $request = Request::create('/page');
        $response = $kernel->handle($request);
        self::assertSame(200, $response->getStatusCode());
        self::assertSame([true, 0], $seen);
        $kernel->terminate($request, $response);
        self::assertFalse($outcomes->isOpen());
        self::assertSame(0, Flagport::report('user_report'), 'outside a request');
    }

    public function testTheDeploymentMonitorRouteRedirectsBehindTheAppsMiddleware(): void
    {
        $monitor = 'https://flags.portal.example/ui/deployment-monitor';
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'), [], [
            'monitor' => ['url' => $monitor, 'path' => '/admin/deployment-monitor', 'middleware' => ['portal-admin']],
        ]);
        // The app's own gate (the portal's is `auth` plus its admin check): no user, no redirect.
        $this->app['router']->aliasMiddleware('portal-admin', PortalAdminOnly::class);
        $kernel = $this->app->make(HttpKernel::class);
        $refused = $kernel->handle(Request::create('/admin/deployment-monitor'));
        self::assertSame(403, $refused->getStatusCode());
        $this->actingAs(['id' => 1]);
        $sent = $kernel->handle(Request::create('/admin/deployment-monitor'));
        self::assertSame(302, $sent->getStatusCode());
        self::assertSame($monitor, $sent->headers->get('Location'));
    }

    public function testAMonitorUrlThatIsNotHttpRegistersNoRoute(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'), [], [
            'monitor' => ['url' => 'javascript:alert(1)', 'path' => '/admin/deployment-monitor', 'middleware' => []],
        ]);
        $previous = ini_set('error_log', '/dev/null');
        try {
            $answer = $this->app->make(HttpKernel::class)->handle(Request::create('/admin/deployment-monitor'));
        } finally {
            ini_set('error_log', (string) $previous);
        }
        self::assertSame(404, $answer->getStatusCode());
    }

    public function testMiddlewareReturns404WhenOff(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        $this->app['router']->get('/tables', static fn () => 'tables!')->middleware('feature:ui-improvements.responsive-tables');
        $this->app['router']->get('/nav', static fn () => 'nav!')->middleware('feature:test-coverage-reporting.coverage-dashboard');
        $kernel = $this->app->make(HttpKernel::class);
        $this->actingAs(['id' => 5]);
        self::assertSame(404, $kernel->handle(Request::create('/tables'))->getStatusCode());
        [$code] = $this->artisan('feature:enable', ['key' => 'ui-improvements', '--percentage' => '100']);
        self::assertSame(0, $code);
        $this->app->make(Client::class)->reset();
        $response = $kernel->handle(Request::create('/tables'));
        self::assertSame(200, $response->getStatusCode());
        self::assertSame('tables!', $response->getContent());
        $this->artisan('feature:disable', ['key' => 'ui-improvements']);
    }

    public function testDefaultsFromConfigFeaturesWhenTheServerIsDown(): void
    {
        $features = ['ui-improvements' => ['mobile-navigation-fix' => true, 'dropdown-fixes' => false], 'auth-improvements' => true];
        $this->boot(self::env('FLAGPORT_TEST_DEAD_URL'), $features);
        $this->actingAs(['id' => 1]);
        self::assertTrue(feature('ui-improvements.mobile-navigation-fix'));
        self::assertFalse(feature('ui-improvements.dropdown-fixes', true));
        self::assertTrue(feature('auth-improvements'));
        self::assertTrue(feature('unknown', true));
        self::assertFalse(feature('unknown'));
        $html = $this->view('down', "@feature('ui-improvements.mobile-navigation-fix') ON @else OFF @endfeature");
        self::assertStringContainsString('ON', $html);
    }

    public function testGuestsUseTheSessionAndNoneMeansEmptyKey(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'));
        self::assertSame(['targetingKey' => ''], \Flagport\Laravel\FlagportServiceProvider::context($this->app));
        $session = new \Illuminate\Session\Store('portal', new \Illuminate\Session\ArraySessionHandler(10));
        $session->setId(str_repeat('a', 40));
        $request = Request::create('/');
        $request->setLaravelSession($session);
        $this->app->instance('request', $request);
        self::assertSame(['targetingKey' => str_repeat('a', 40)], \Flagport\Laravel\FlagportServiceProvider::context($this->app));
    }

    public function testMemoizationResetsPerJobAndScriptIsConfigurable(): void
    {
        $this->boot(self::env('FLAGPORT_TEST_LARAVEL_URL'), [], ['script' => ['only' => ['ui-improvements'], 'except' => ['ui-improvements.responsive-tables']]]);
        $this->actingAs(['id' => 3]);
        $client = $this->app->make(Client::class);
        feature('auth-improvements');
        feature('ui-improvements');
        self::assertSame(1, $client->status()['calls']);
        $job = $this->createMock(\Illuminate\Contracts\Queue\Job::class);
        $this->app['events']->dispatch(new \Illuminate\Queue\Events\JobProcessing('sync', $job));
        feature('ui-improvements');
        self::assertSame(2, $client->status()['calls']);
        $html = $this->view('script', '@flagportScript');
        self::assertSame(
            '<script>window.features = {"ui-improvements":{"_value":false,"dropdown-fixes":false,"mobile-navigation-fix":false}};</script>',
            $html,
        );
        self::assertSame(
            '<script nonce="n1">window.features = {"auth-improvements":false};</script>',
            $this->view('script2', "@flagportScript(['only' => ['auth-improvements'], 'nonce' => 'n1'])"),
        );
    }
}

/** The portal's own admin gate, as a test stands it in: a signed-in user, else 403. */
final class PortalAdminOnly
{
    public function handle(Request $request, \Closure $next): mixed
    {
        if (app('auth')->user() === null) {
            return new \Illuminate\Http\Response('forbidden', 403);
        }
        return $next($request);
    }
}
