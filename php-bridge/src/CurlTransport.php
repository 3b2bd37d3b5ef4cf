<?php

declare(strict_types=1);

namespace Flagport;

/**
 * HTTP/1.1 over ext-curl, to `http://host:port` or to a Unix socket `unix:///path.sock`
 * (the server's `--uds`, via CURLOPT_UNIX_SOCKET_PATH).
 *
 * Keep-alive: the curl handle is kept per endpoint for the life of the PHP process' request
 * scope, so several calls in one request (several contexts, a queue worker handling many
 * jobs, artisan commands) reuse one connection. PHP-FPM frees every handle at the end of a
 * request (ext-curl has no persistent handles before PHP 8.5), so each FPM request opens one
 * connection: over a Unix socket that costs a few microseconds, which is why the socket is the
 * recommended sidecar setup.
 *
 * Proxy variables (`http_proxy`...) are ignored: the sidecar is local.
 */
final class CurlTransport implements Transport
{
    /** @var array<string, \CurlHandle> endpoint => reusable handle */
    private static array $handles = [];

    private string $base;
    private ?string $socket = null;

    /**
     * @param string      $url              `http://127.0.0.1:8787`, `https://...` or `unix:///run/flagport.sock`
     * @param int         $connectTimeoutMs connection timeout in milliseconds
     * @param int         $timeoutMs        whole-request timeout in milliseconds
     * @param string|null $token            bearer token, if the server requires one
     */
    public function __construct(
        private string $url,
        private int $connectTimeoutMs = 50,
        private int $timeoutMs = 250,
        private ?string $token = null,
    ) {
        if (str_starts_with($url, 'unix://')) {
            $this->socket = substr($url, 7);
            $this->base = 'http://flagport';
        } else {
            $this->base = rtrim($url, '/');
        }
    }

    public function request(string $method, string $path, ?string $body = null, array $headers = []): HttpResponse
    {
        $handle = self::$handles[$this->url] ?? null;
        if ($handle === null) {
            $handle = curl_init();
            if ($handle === false) {
                throw new TransportException('curl_init failed');
            }
            self::$handles[$this->url] = $handle;
        }
        $lines = ['Expect:', 'Accept: application/json'];
        if ($body !== null) {
            $lines[] = 'Content-Type: application/json';
        }
        if ($this->token !== null && $this->token !== '') {
            $lines[] = 'Authorization: Bearer ' . $this->token;
        }
        foreach ($headers as $name => $value) {
            $lines[] = $name . ': ' . $value;
        }
        $etag = null;
        $options = [
            CURLOPT_URL => $this->base . $path,
            CURLOPT_CUSTOMREQUEST => $method,
            CURLOPT_POST => $body !== null,
            CURLOPT_POSTFIELDS => $body ?? '',
            CURLOPT_HTTPHEADER => $lines,
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_HTTP_VERSION => CURL_HTTP_VERSION_1_1,
            CURLOPT_CONNECTTIMEOUT_MS => $this->connectTimeoutMs,
            CURLOPT_TIMEOUT_MS => $this->timeoutMs,
            // Sub-second timeouts need NOSIGNAL (curl's signal-based resolver timeouts are whole seconds).
            CURLOPT_NOSIGNAL => true,
            CURLOPT_PROXY => '',
            CURLOPT_FOLLOWLOCATION => false,
            CURLOPT_HEADERFUNCTION => static function ($ch, string $line) use (&$etag): int {
                if (strncasecmp($line, 'etag:', 5) === 0) {
                    $etag = trim(substr($line, 5));
                }
                return strlen($line);
            },
        ];
        if ($this->socket !== null) {
            $options[CURLOPT_UNIX_SOCKET_PATH] = $this->socket;
        }
        curl_setopt_array($handle, $options);
        $result = curl_exec($handle);
        if ($result === false || !is_string($result)) {
            $error = curl_error($handle) . ' (curl ' . curl_errno($handle) . ')';
            // A failed connection may leave the handle's pool in a bad state: start afresh.
            curl_close($handle);
            unset(self::$handles[$this->url]);
            throw new TransportException($error);
        }
        return new HttpResponse((int) curl_getinfo($handle, CURLINFO_RESPONSE_CODE), $result, $etag);
    }

    /** Close every kept connection (tests; long-running workers that fork). */
    public static function closeAll(): void
    {
        foreach (self::$handles as $handle) {
            curl_close($handle);
        }
        self::$handles = [];
    }
}
