<?php

declare(strict_types=1);

namespace Flagport;

/**
 * HTTP/1.1 to the server's Unix socket (`flags serve --uds`) over one persistent connection per
 * PHP process: a PHP-FPM worker opens it on its first request and reuses it (keep-alive) for
 * every later request it serves, which ext-curl cannot do (it frees its handles at the end of
 * each request). See docs/adr/0022-php-bridge-transport.md.
 *
 * - A connection is reused only when it is idle and clean: PHP drops a persistent stream the
 *   server has closed, and a stream with unread bytes (a request killed mid-answer) is closed
 *   here before it is used.
 * - Any error, a timeout or a `Connection: close` answer closes the connection; the next call
 *   opens a new one.
 * - A reused connection that fails before a single byte of the answer arrived (the server
 *   closed it while idle, a race PHP's check cannot see) is retried once on a new connection.
 *   Evaluation is read-only: the rare retry can at most count one evaluation twice in the stats.
 * - The answer is read strictly: status line `HTTP/1.x NNN`, at most {@see MAX_HEAD} bytes of
 *   headers and {@see MAX_BODY} of body, `Content-Length` or chunked; anything else is a
 *   {@see TransportException}, never a partial answer.
 *
 * TCP and https URLs use {@see CurlTransport}; {@see SocketTransport::forUrl()} picks.
 */
final class SocketTransport implements Transport
{
    /** Largest status line plus headers accepted. */
    public const MAX_HEAD = 16 * 1024;
    /** Largest body accepted (a bulk answer of 50 flags is about 4 KB). */
    public const MAX_BODY = 8 * 1024 * 1024;
    private const READ_SIZE = 65536;
    /** {@see TransportException} code: the server closed the connection before answering. */
    private const STALE = 1;

    private string $address;
    private string $fixedHeaders;

    /**
     * @param string      $socket           path of the server's Unix socket
     * @param int         $connectTimeoutMs connection timeout in milliseconds
     * @param int         $timeoutMs        whole-request timeout in milliseconds
     * @param string|null $token            bearer token, if the server requires one
     */
    public function __construct(
        string $socket,
        private int $connectTimeoutMs = 50,
        private int $timeoutMs = 250,
        ?string $token = null,
    ) {
        $this->address = 'unix://' . $socket;
        $this->fixedHeaders = "Host: flagport\r\n"
            . ($token !== null && $token !== '' ? 'Authorization: Bearer ' . $token . "\r\n" : '');
    }

    /**
     * The transport for a client's URL: this one for `unix://` when `$transport` is `auto`,
     * else {@see CurlTransport} (TCP, https, or any other `$transport`, such as `curl`).
     */
    public static function forUrl(
        string $url,
        string $transport,
        int $connectTimeoutMs,
        int $timeoutMs,
        ?string $token,
    ): Transport {
        if ($transport === 'auto' && str_starts_with($url, 'unix://')) {
            return new self(substr($url, 7), $connectTimeoutMs, $timeoutMs, $token);
        }
        return new CurlTransport($url, $connectTimeoutMs, $timeoutMs, $token);
    }

    public function request(string $method, string $path, ?string $body = null, array $headers = []): HttpResponse
    {
        $message = $method . ' ' . $path . " HTTP/1.1\r\n" . $this->fixedHeaders;
        if ($body !== null) {
            $message .= "Content-Type: application/json\r\nContent-Length: " . strlen($body) . "\r\n";
        }
        foreach ($headers as $name => $value) {
            if (strpbrk($name . $value, "\r\n") !== false) {
                throw new TransportException("header $name contains a line break");
            }
            $message .= $name . ': ' . $value . "\r\n";
        }
        $message .= "\r\n" . ($body ?? '');
        $deadline = hrtime(true) + $this->timeoutMs * 1_000_000;

        $stream = $this->open();
        // A persistent stream that has read before was opened by an earlier request or call.
        $reused = ftell($stream) > 0;
        try {
            return $this->exchange($stream, $message, $method, $deadline);
        } catch (\Throwable $error) {
            self::close($stream);
            if (!$reused || !$error instanceof TransportException || $error->getCode() !== self::STALE) {
                throw $error;
            }
        }
        $stream = $this->open();
        try {
            return $this->exchange($stream, $message, $method, $deadline);
        } catch (\Throwable $error) {
            self::close($stream);
            throw $error;
        }
    }

    /** Close this process' persistent connection to `$socket` (tests; workers that fork). */
    public static function closePersistent(string $socket): void
    {
        $stream = @stream_socket_client('unix://' . $socket, $errno, $errstr, 0.05, STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT);
        if (is_resource($stream)) {
            self::close($stream);
        }
    }

    /** @return resource an idle, clean connection (this process' persistent one when it is) */
    private function open()
    {
        for ($attempt = 0; $attempt < 2; $attempt++) {
            $stream = @stream_socket_client(
                $this->address,
                $errno,
                $errstr,
                $this->connectTimeoutMs / 1000,
                STREAM_CLIENT_CONNECT | STREAM_CLIENT_PERSISTENT,
            );
            if (!is_resource($stream)) {
                throw new TransportException(sprintf('cannot connect to %s: %s (%d)', $this->address, $errstr, $errno));
            }
            $read = [$stream];
            $none = null;
            // Readable while idle: bytes left by an interrupted exchange, or the server's close.
            if (@stream_select($read, $none, $none, 0) === 0) {
                return $stream;
            }
            self::close($stream);
        }
        throw new TransportException('the connection to ' . $this->address . ' is not clean after reconnecting');
    }

    /**
     * @param resource $stream
     * @throws TransportException code STALE when the server closed the connection before answering
     */
    private function exchange($stream, string $message, string $method, int $deadline): HttpResponse
    {
        $this->write($stream, $message, $deadline);
        $buffer = '';
        while (($end = strpos($buffer, "\r\n\r\n")) === false) {
            if (strlen($buffer) > self::MAX_HEAD) {
                throw new TransportException('the answer\'s headers are larger than ' . self::MAX_HEAD . ' bytes');
            }
            $chunk = $this->read($stream, $deadline);
            if ($chunk === '') {
                if ($buffer === '') {
                    throw new TransportException('the server closed the connection without answering', self::STALE);
                }
                throw new TransportException('the server closed the connection in the middle of the headers');
            }
            $buffer .= $chunk;
        }
        if ($end > self::MAX_HEAD) {
            throw new TransportException('the answer\'s headers are larger than ' . self::MAX_HEAD . ' bytes');
        }
        $head = substr($buffer, 0, $end);
        $buffer = (string) substr($buffer, $end + 4);
        if (preg_match('~^HTTP/1\.([01]) ([1-5][0-9]{2})(?: [^\r\n]*)?(?:\r\n|$)~', $head, $status) !== 1) {
            throw new TransportException('the server answered something that is not HTTP/1.x: ' . TransportException::excerpt($head, 60));
        }
        $code = (int) $status[2];
        $fields = [];
        foreach (explode("\r\n", substr($head, strlen($status[0]))) as $line) {
            if ($line === '') {
                continue;
            }
            $colon = strpos($line, ':');
            if ($colon === false || $colon === 0) {
                throw new TransportException('malformed header line in the answer: ' . TransportException::excerpt($line, 60));
            }
            $name = strtolower(substr($line, 0, $colon));
            if (isset($fields[$name]) && ($name === 'content-length' || $name === 'transfer-encoding')) {
                throw new TransportException("the answer has more than one $name header");
            }
            $fields[$name] = trim(substr($line, $colon + 1));
        }
        if (isset($fields['content-length'], $fields['transfer-encoding'])) {
            throw new TransportException('the answer has both Content-Length and Transfer-Encoding');
        }
        if ($code < 200) {
            throw new TransportException("unexpected interim answer $code");
        }
        $connection = strtolower($fields['connection'] ?? '');
        $keep = $status[1] === '1' ? !str_contains($connection, 'close') : str_contains($connection, 'keep-alive');
        if ($method === 'HEAD' || $code === 204 || $code === 304) {
            $content = '';
        } elseif (isset($fields['transfer-encoding'])) {
            if (strtolower($fields['transfer-encoding']) !== 'chunked') {
                throw new TransportException('unsupported Transfer-Encoding: ' . TransportException::excerpt($fields['transfer-encoding'], 40));
            }
            $content = $this->chunked($stream, $buffer, $deadline);
        } elseif (isset($fields['content-length'])) {
            $length = $fields['content-length'];
            if (preg_match('/^[0-9]{1,9}$/', $length) !== 1 || (int) $length > self::MAX_BODY) {
                throw new TransportException('bad Content-Length in the answer: ' . TransportException::excerpt($length, 20));
            }
            $content = $this->exactly($stream, $buffer, (int) $length, $deadline);
        } else {
            $content = $this->untilClosed($stream, $buffer, $deadline);
            $keep = false;
        }
        if (!$keep) {
            self::close($stream);
        }
        return new HttpResponse($code, $content, $fields['etag'] ?? null);
    }

    /** @param resource $stream */
    private function write($stream, string $message, int $deadline): void
    {
        $this->arm($stream, $deadline);
        $written = @fwrite($stream, $message);
        while ($written !== false && $written > 0 && $written < strlen($message)) {
            $message = substr($message, $written);
            $this->arm($stream, $deadline);
            $written = @fwrite($stream, $message);
        }
        if ($written === false || $written === 0) {
            if (stream_get_meta_data($stream)['timed_out']) {
                throw new TransportException('timed out sending the request to ' . $this->address);
            }
            throw new TransportException('the connection to ' . $this->address . ' is closed', self::STALE);
        }
    }

    /**
     * What the server sent next (at most {@see READ_SIZE} bytes); '' when it closed the connection.
     *
     * @param resource $stream
     */
    private function read($stream, int $deadline): string
    {
        $this->arm($stream, $deadline);
        $chunk = @fread($stream, self::READ_SIZE);
        if ($chunk === false || $chunk === '') {
            if (stream_get_meta_data($stream)['timed_out']) {
                throw new TransportException(sprintf('timed out after %d ms waiting for %s', $this->timeoutMs, $this->address));
            }
            return '';
        }
        return $chunk;
    }

    /** @param resource $stream */
    private function arm($stream, int $deadline): void
    {
        $left = $deadline - hrtime(true);
        if ($left <= 0) {
            throw new TransportException(sprintf('timed out after %d ms waiting for %s', $this->timeoutMs, $this->address));
        }
        stream_set_timeout($stream, intdiv($left, 1_000_000_000), intdiv($left % 1_000_000_000, 1000));
    }

    /** @param resource $stream */
    private function exactly($stream, string $buffer, int $length, int $deadline): string
    {
        while (strlen($buffer) < $length) {
            $chunk = $this->read($stream, $deadline);
            if ($chunk === '') {
                throw new TransportException(sprintf('the answer ended after %d of %d bytes', strlen($buffer), $length));
            }
            $buffer .= $chunk;
        }
        if (strlen($buffer) > $length) {
            throw new TransportException('the server sent more than the answer\'s Content-Length');
        }
        return $buffer;
    }

    /** @param resource $stream */
    private function untilClosed($stream, string $buffer, int $deadline): string
    {
        while (($chunk = $this->read($stream, $deadline)) !== '') {
            $buffer .= $chunk;
            if (strlen($buffer) > self::MAX_BODY) {
                throw new TransportException('the answer is larger than ' . self::MAX_BODY . ' bytes');
            }
        }
        return $buffer;
    }

    /** @param resource $stream */
    private function chunked($stream, string $buffer, int $deadline): string
    {
        $content = '';
        while (true) {
            while (($eol = strpos($buffer, "\r\n")) === false) {
                if (strlen($buffer) > 1024) {
                    throw new TransportException('malformed chunk size line in the answer');
                }
                $buffer .= $this->more($stream, $deadline);
            }
            $size = strtolower(trim(explode(';', substr($buffer, 0, $eol), 2)[0]));
            if (preg_match('/^[0-9a-f]{1,7}$/', $size) !== 1) {
                throw new TransportException('malformed chunk size in the answer: ' . TransportException::excerpt($size, 20));
            }
            $length = (int) hexdec($size);
            $buffer = (string) substr($buffer, $eol + 2);
            if ($length === 0) {
                // No trailers are expected: the final CRLF ends the answer.
                while (strlen($buffer) < 2) {
                    $buffer .= $this->more($stream, $deadline);
                }
                if (strncmp($buffer, "\r\n", 2) !== 0 || strlen($buffer) > 2) {
                    throw new TransportException('unexpected bytes after the last chunk');
                }
                return $content;
            }
            if (strlen($content) + $length > self::MAX_BODY) {
                throw new TransportException('the answer is larger than ' . self::MAX_BODY . ' bytes');
            }
            while (strlen($buffer) < $length + 2) {
                $buffer .= $this->more($stream, $deadline);
            }
            if (substr($buffer, $length, 2) !== "\r\n") {
                throw new TransportException('a chunk of the answer does not end with CRLF');
            }
            $content .= substr($buffer, 0, $length);
            $buffer = (string) substr($buffer, $length + 2);
        }
    }

    /** @param resource $stream */
    private function more($stream, int $deadline): string
    {
        $chunk = $this->read($stream, $deadline);
        if ($chunk === '') {
            throw new TransportException('the server closed the connection in the middle of a chunked answer');
        }
        return $chunk;
    }

    /** @param resource $stream */
    private static function close($stream): void
    {
        // fclose() on a persistent stream closes it for good (the next open makes a new one).
        @fclose($stream);
    }
}
