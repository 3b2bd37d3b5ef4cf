<?php

declare(strict_types=1);

namespace Flagport;

/**
 * Fixed flag values that cannot be used (docs/spec.md, "Fixed flag values and local
 * overrides"): a `FLAGPORT_OVERRIDES` file or inline JSON that cannot be read or parsed, or a
 * key or value {@see Flagport::fake()} cannot serve. The message names the source and the
 * position: line and column of a syntax error, line and entry (`$["key"]`) of a bad entry.
 */
final class InvalidOverrides extends \InvalidArgumentException
{
    /** @param string|null $key the entry at fault, named in the message as `$["key"]` */
    public function __construct(string $problem, public readonly ?string $key = null)
    {
        parent::__construct($key === null ? $problem : $problem . ' (entry ' . FixedFlags::entryPath($key) . ')');
    }
}
