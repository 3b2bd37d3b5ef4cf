<?php

declare(strict_types=1);

namespace Flagport\Laravel;

use Closure;
use Flagport\Client;
use Symfony\Component\HttpKernel\Exception\NotFoundHttpException;

/**
 * Route middleware `feature:<key>`: 404 unless the flag is on for the current user.
 *
 *     Route::get('/beta', ...)->middleware('feature:ui-improvements.responsive-tables');
 */
final class EnsureFeatureEnabled
{
    public function __construct(private Client $client)
    {
    }

    /**
     * @param \Illuminate\Http\Request $request
     */
    public function handle($request, Closure $next, string $key): mixed
    {
        if (!$this->client->isEnabled($key)) {
            throw new NotFoundHttpException();
        }
        return $next($request);
    }
}
