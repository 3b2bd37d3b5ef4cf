<?php

declare(strict_types=1);

namespace Flagport\Tests\Laravel;

use Flagport\Client;
use Flagport\Flagport;
use Flagport\Overrides;
use Illuminate\Contracts\Http\Kernel as HttpKernel;
use Illuminate\Http\Request;

/**
 * `Flagport::fake()` in a Laravel app, as the README's "Testing your app with flags" shows it:
 * every consumer (feature(), feature_value(), Blade `@feature`, the `feature:` middleware,
 * ReportOutcomes, `@flagportScript`) reads the fake, with no server (the configured URL is one
 * where nothing listens, and the client makes no call), and nothing carries over from one test
 * to the next (the first two tests run in this order).
 */
final class FlagportFakeTest extends LaravelTestCase
{
    /** Where nothing listens: a call would be counted in status()['calls'] and fail. */
    private const NOBODY = 'http://127.0.0.1:9';

    private function bootFaked(array $features = []): void
    {
        $this->boot(self::NOBODY, $features);
        $this->actingAs(['id' => 42, 'company_id' => 7]);
    }

    public function testEveryConsumerReadsTheFake(): void
    {
        $this->bootFaked();
        Flagport::fake([
            'ui-improvements' => true,
            'ui-improvements.dropdown-fixes' => true,
            'checkout' => 'variant-b',
            'ui-improvements.responsive-tables' => false,
        ]);
        self::assertTrue(feature('ui-improvements'));
        self::assertSame('variant-b', feature_value('checkout'));
        self::assertTrue(feature('checkout'), 'a value that is not false is on');
        self::assertFalse(feature('ui-improvements.responsive-tables', true));
        self::assertFalse(feature('unknown'));

        $html = $this->view('page', "@feature('ui-improvements.dropdown-fixes') NEW @else OLD @endfeature|@flagportScript");
        self::assertStringContainsString('NEW', $html);
        self::assertStringContainsString(
            '<script>window.features = {"checkout":"variant-b","ui-improvements":{"_value":true,"dropdown-fixes":true,"responsive-tables":false}};</script>',
            $html,
        );

        $router = $this->app['router'];
        $router->get('/tables', static fn () => 'tables!')->middleware(['flagport.outcomes', 'feature:ui-improvements.responsive-tables']);
        $router->get('/dropdowns', static fn () => 'dropdowns!')->middleware(['flagport.outcomes', 'feature:ui-improvements.dropdown-fixes']);
        $kernel = $this->app->make(HttpKernel::class);
        foreach (['/tables' => 404, '/dropdowns' => 200] as $path => $status) {
            $request = Request::create($path);
            $response = $kernel->handle($request);
            self::assertSame($status, $response->getStatusCode(), $path);
            $kernel->terminate($request, $response);
        }
        self::assertFalse($this->app->make(Client::class)->outcomes()->isOpen(), 'ReportOutcomes closed the request');

        Flagport::assertEvaluated('ui-improvements.dropdown-fixes');
        Flagport::assertEvaluated('ui-improvements.responsive-tables', 2);
        Flagport::assertNotEvaluated('ui-improvements.mobile-navigation-fix');
        $client = $this->app->make(Client::class);
        self::assertTrue($client->isFaked());
        self::assertSame(0, $client->status()['calls'], 'no request to any server');
        self::assertSame(Client::SOURCE_FAKE, $client->status()['source']);
    }

    public function testTheNextTestStartsWithoutTheFake(): void
    {
        $previous = ini_set('error_log', '/dev/null');
        try {
            $this->bootFaked();
            $client = $this->app->make(Client::class);
            self::assertFalse($client->isFaked());
            self::assertFalse(feature('ui-improvements'), 'the default: the server cannot be reached');
            self::assertNull(feature_value('checkout'));
            self::assertSame(1, $client->status()['calls'], 'a real client asks the server');
        } finally {
            ini_set('error_log', (string) $previous);
        }
        $this->expectException(\LogicException::class);
        Flagport::assertEvaluated('ui-improvements');
    }

    public function testOverridesPerTestAndFakeAgainAddValues(): void
    {
        $this->bootFaked(['auth-improvements' => true]);
        $fake = Flagport::fake(['ui-improvements' => true]);
        self::assertTrue(feature('ui-improvements'));
        $fake->override('ui-improvements', false);
        self::assertFalse(feature('ui-improvements'));
        Flagport::override(['ui-improvements' => true, 'ui-improvements.dropdown-fixes' => 'v2']);
        Flagport::fake(['checkout' => 'variant-c']);
        self::assertTrue(feature('ui-improvements'));
        self::assertSame('v2', feature_value('ui-improvements.dropdown-fixes'));
        self::assertSame('variant-c', feature_value('checkout'));
        // A flag the fake does not name takes its configured default (config/features.php).
        self::assertTrue(feature('auth-improvements'));
        // A parent faked off turns its faked children off, as the server's hierarchy would.
        Flagport::override('ui-improvements', false);
        self::assertFalse(feature('ui-improvements.dropdown-fixes', true));
        self::assertSame(0, $this->app->make(Client::class)->status()['calls']);
        $this->expectException(\Flagport\InvalidOverrides::class);
        Flagport::override('Not A Key', true);
    }

    public function testTheDevelopersOverridesApplyButNotInProduction(): void
    {
        putenv(Overrides::VARIABLE . '={"ui-improvements.dropdown-fixes": true}');
        $previous = ini_set('error_log', '/dev/null');
        try {
            $this->bootFaked();
            self::assertTrue(feature('ui-improvements.dropdown-fixes'));
            // A test's flags are the test's: the fake drops the developer's overrides.
            Flagport::fake(['checkout' => 'variant-b']);
            self::assertFalse(feature('ui-improvements.dropdown-fixes'));
            $this->bootFaked();
            $this->boot(self::NOBODY);
            $this->app->detectEnvironment(static fn (): string => 'production');
            self::assertFalse(feature('ui-improvements.dropdown-fixes'));
            // As configured (`flagport.overrides`, which `config:cache` keeps).
            putenv(Overrides::VARIABLE);
            $this->boot(self::NOBODY, [], ['overrides' => '{"checkout": "from-config"}']);
            self::assertSame('from-config', feature_value('checkout'));
        } finally {
            putenv(Overrides::VARIABLE);
            ini_set('error_log', (string) $previous);
        }
    }
}
