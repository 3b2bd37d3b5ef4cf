<?php

declare(strict_types=1);

namespace Flagport;

/** A raw HTTP answer from the Flagport server. */
final class HttpResponse
{
    /**
     * @param int    $status HTTP status code
     * @param string $body   response body
     * @param string|null $etag the ETag header, verbatim (quotes included)
     */
    public function __construct(
        public readonly int $status,
        public readonly string $body,
        public readonly ?string $etag = null,
    ) {
    }
}
