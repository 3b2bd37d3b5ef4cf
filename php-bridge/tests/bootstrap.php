<?php

declare(strict_types=1);

error_reporting(E_ALL);
require __DIR__ . '/../autoload.php';

// Test helpers: Flagport\Tests\X\Y lives in tests/X/Y.php.
spl_autoload_register(static function (string $class): void {
    if (strncmp($class, 'Flagport\\Tests\\', 15) === 0) {
        $file = __DIR__ . '/' . str_replace('\\', '/', substr($class, 15)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});
