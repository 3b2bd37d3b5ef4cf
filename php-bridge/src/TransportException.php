<?php

declare(strict_types=1);

namespace Flagport;

/**
 * The server could not be reached or did not answer in time. Internal: {@see Client} turns it
 * into fail-safe values and never lets it reach the application.
 */
final class TransportException extends \RuntimeException
{
}
