<?php

declare(strict_types=1);

namespace Flagport\Laravel;

use Closure;
use Flagport\Client;

/**
 * Global terminable middleware reporting each request's outcome for the guarded rollouts'
 * plan cohorts it read (docs/spec.md section 13, "Outcome signals"):
 *
 *     // app/Http/Kernel.php
 *     protected $middleware = [\Flagport\Laravel\ReportOutcomes::class, ...];
 *
 * handle() opens the request on the client's {@see \Flagport\Outcomes\Reporter}; every flag
 * the request reads whose answer names a plan cohort is noted. terminate(), after the answer
 * was sent, counts the status (failed: >= 500, or an exception escaping the app) and the
 * duration since `LARAVEL_START` into the pool's APCu aggregate; the first request 1 s after
 * the pool's last post posts the pool's counts (one call per second, not one per page). A
 * PHP fatal error is counted as a failure by the reporter's shutdown function. Nothing here
 * throws into the application.
 */
final class ReportOutcomes
{
    public function __construct(private Client $client)
    {
    }

    /**
     * @param \Illuminate\Http\Request $request
     */
    public function handle($request, Closure $next): mixed
    {
        $this->client->outcomes()->begin();
        try {
            return $next($request);
        } catch (\Throwable $error) {
            // Laravel's pipeline renders exceptions itself; one getting here escaped the app.
            $this->client->outcomes()->end(500, true);
            throw $error;
        }
    }

    /**
     * @param \Illuminate\Http\Request $request
     * @param \Symfony\Component\HttpFoundation\Response $response
     */
    public function terminate($request, $response): void
    {
        try {
            $status = is_object($response) && method_exists($response, 'getStatusCode') ? (int) $response->getStatusCode() : 200;
            $this->client->outcomes()->end($status);
        } catch (\Throwable $error) {
            error_log('flagport: outcomes: ' . $error->getMessage());
        }
    }
}
