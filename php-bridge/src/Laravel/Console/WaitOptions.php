<?php

declare(strict_types=1);

namespace Flagport\Laravel\Console;

/** The options of the commands that wait for every worker (WaitsForWorkers reads them). */
final class WaitOptions
{
    /** Appended to each such command's signature. */
    public const SIGNATURE = '
        {--no-wait : Do not wait for every worker to apply the change}
        {--timeout=5 : Seconds to wait for every live worker (else exit 5)}';
}
