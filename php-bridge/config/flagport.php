<?php

/*
 * Flagport for Laravel. Publish with:
 *   php artisan vendor:publish --provider="Flagport\Laravel\FlagportServiceProvider" --tag=flagport-config
 */

use Flagport\AdminClient;
use Flagport\Client;

// Every default below is Client::DEFAULT_OPTIONS' (or AdminClient's): one list, in the library.
$defaults = Client::DEFAULT_OPTIONS;

return [
    // The Flagport sidecar: `http://127.0.0.1:8787`, or its Unix socket `unix:///run/flagport/flagport.sock`.
    'url' => env('FLAGPORT_URL', $defaults['url']),

    // 'auto': a persistent keep-alive connection per PHP-FPM worker for a unix:// url, curl
    // otherwise; 'curl': curl for every url (one new connection per PHP-FPM request).
    'transport' => env('FLAGPORT_TRANSPORT', $defaults['transport']),

    // Evaluation token (not needed on a loopback or Unix-socket bind, where evaluation is open).
    'eval_token' => env('FLAGPORT_EVAL_TOKEN'),

    // A developer's local overrides (never applied in the production environment): inline JSON
    // or the path of a JSON file of flag key => value; see the README, "Testing your app with flags".
    'overrides' => env('FLAGPORT_OVERRIDES'),

    // Admin token: only the artisan commands (feature:enable, feature:disable, feature:stats) use it.
    'admin_token' => env('FLAGPORT_ADMIN_TOKEN'),

    // Milliseconds. Evaluation must stay cheap when the sidecar is in trouble; admin calls may wait.
    'timeouts' => [
        'connect_ms' => (int) env('FLAGPORT_CONNECT_TIMEOUT_MS', $defaults['connect_timeout_ms']),
        'total_ms' => (int) env('FLAGPORT_TIMEOUT_MS', $defaults['timeout_ms']),
        'admin_ms' => (int) env('FLAGPORT_ADMIN_TIMEOUT_MS', AdminClient::DEFAULT_TIMEOUT_MS),
    ],

    // Defaults when Flagport cannot answer: the default for `a.b` is config('<defaults_config>.a.b'),
    // so the portal's config/features.php (with its env('FEATURE_...', false) values) keeps working.
    // A parent whose config entry is an array may give its own default as '_value'. null: none.
    'defaults_config' => 'features',

    // The evaluation context: the signed-in user's id as targetingKey plus these user attributes
    // (integers stay integers); guests: the session id; no session: "" (no unit).
    'context' => [
        'attributes' => ['company_id', 'role'],
    ],

    // Which flags @flagportScript sends to the browser: a key selects itself and its children.
    'script' => [
        'only' => null,   // null: every flag
        'except' => [],
    ],

    // The runbook's deployment monitor: `path` redirects to Flagport's page (`flags serve` serves
    // it at /ui/deployment-monitor; put the address your people reach, behind TLS), behind the
    // app's own `middleware`, so only those who may see the admin area are sent there.
    // url null: no route.
    'monitor' => [
        'url' => env('FLAGPORT_MONITOR_URL'),
        'path' => '/admin/deployment-monitor',
        'middleware' => ['web', 'auth'],
    ],

    // Last good answers (APCu when available) and the circuit breaker shared by the FPM pool.
    'cache' => [
        'enabled' => $defaults['cache'],
        'ttl' => $defaults['cache_ttl'],
        'max_entries' => $defaults['cache_max_entries'],
        'prefix' => env('FLAGPORT_CACHE_PREFIX', $defaults['cache_prefix']),
    ],
    'breaker' => [
        'threshold' => $defaults['breaker_threshold'],
        'window' => $defaults['breaker_window'],
        'cooldown' => $defaults['breaker_cooldown'],
    ],
];
