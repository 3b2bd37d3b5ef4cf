<?php

declare(strict_types=1);

namespace Flagport;

/**
 * An admin API call failed. {@see AdminException::exitCode()} follows the `flags` CLI:
 * 1 the server refused (not found, conflict, validation), 3 unreachable, 4 not authorized,
 * 5 committed but not confirmed by every live worker in time.
 */
final class AdminException extends \RuntimeException
{
    public const REFUSED = 1;
    public const UNREACHABLE = 3;
    public const UNAUTHORIZED = 4;
    public const NOT_CONFIRMED = 5;

    public function __construct(string $message, private int $exitCode, public readonly ?int $status = null)
    {
        parent::__construct($message);
    }

    public function exitCode(): int
    {
        return $this->exitCode;
    }
}
