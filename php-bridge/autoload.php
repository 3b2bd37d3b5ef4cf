<?php

/**
 * Autoloader for use without Composer: `require 'php-bridge/autoload.php';`.
 *
 * Maps the PSR-4 prefix `Flagport\` to src/ (as composer.json declares) and loads the
 * global helpers (`feature()`), exactly what Composer's autoloader would do.
 */

declare(strict_types=1);

spl_autoload_register(static function (string $class): void {
    if (strncmp($class, 'Flagport\\', 9) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, 9)) . '.php';
    if (is_file($file)) {
        require $file;
    }
});

require_once __DIR__ . '/src/helpers.php';
