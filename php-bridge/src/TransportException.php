<?php

declare(strict_types=1);

namespace Flagport;

/**
 * The server could not be reached or did not answer in time. Internal: {@see Client} turns it
 * into fail-safe values and never lets it reach the application.
 */
final class TransportException extends \RuntimeException
{
    /**
     * The start of what the server sent, for an error message: bytes outside printable ASCII
     * escaped, so a message (logged, or in {@see Client::status()}) is always valid UTF-8.
     */
    public static function excerpt(string $bytes, int $length): string
    {
        return addcslashes(substr($bytes, 0, $length), "\0..\37\\\177..\377");
    }
}
