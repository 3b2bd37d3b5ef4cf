<?php

/**
 * Global helpers, loaded by autoload.php and by Composer's "files" autoload.
 */

declare(strict_types=1);

if (!function_exists('feature')) {
    /**
     * Whether a flag is on for the current context (Laravel: the signed-in user).
     *
     *     if (feature('ui-improvements.mobile-navigation-fix')) { ... }
     *
     * Never throws: without an answer from Flagport it is the flag's configured default
     * (Laravel: `config('features.<key>')`), else `$default`.
     */
    function feature(string $key, bool $default = false): bool
    {
        return \Flagport\Flagport::client()->isEnabled($key, null, $default);
    }
}

if (!function_exists('feature_value')) {
    /**
     * A flag's value for the current context (its JSON type kept), or a default.
     */
    function feature_value(string $key, mixed $default = null): mixed
    {
        return \Flagport\Flagport::client()->value($key, $default);
    }
}
