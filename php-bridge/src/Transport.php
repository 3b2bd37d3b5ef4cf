<?php

declare(strict_types=1);

namespace Flagport;

/** Sends one HTTP request to the Flagport server. */
interface Transport
{
    /**
     * @param string               $method  HTTP method
     * @param string               $path    absolute path such as `/ofrep/v1/evaluate/flags`
     * @param string|null          $body    JSON body, or null
     * @param array<string,string> $headers extra request headers
     * @throws TransportException when no HTTP answer arrived (refused, timeout, reset)
     */
    public function request(string $method, string $path, ?string $body = null, array $headers = []): HttpResponse;
}
