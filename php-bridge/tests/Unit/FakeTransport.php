<?php

declare(strict_types=1);

namespace Flagport\Tests\Unit;

use Flagport\HttpResponse;
use Flagport\Transport;
use Flagport\TransportException;

/** Scripted answers for client unit tests; records the requests. */
final class FakeTransport implements Transport
{
    /** @var list<array{method: string, path: string, body: ?string, headers: array<string, string>}> */
    public array $requests = [];

    /** @param list<HttpResponse|\Throwable> $answers */
    public function __construct(public array $answers = [])
    {
    }

    public function request(string $method, string $path, ?string $body = null, array $headers = []): HttpResponse
    {
        $this->requests[] = compact('method', 'path', 'body', 'headers');
        $answer = array_shift($this->answers) ?? new TransportException('no scripted answer');
        if ($answer instanceof \Throwable) {
            throw $answer;
        }
        return $answer;
    }

    /** @param array<string, mixed> $values key => value (boolean flags) */
    public static function bulk(array $values, ?string $etag = '"1-x"'): HttpResponse
    {
        $flags = [];
        foreach ($values as $key => $value) {
            $flags[] = ['key' => $key, 'value' => $value, 'variant' => $value === false ? 'off' : 'on', 'reason' => 'SPLIT'];
        }
        return new HttpResponse(200, (string) json_encode(['flags' => $flags]), $etag);
    }
}
