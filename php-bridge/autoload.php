<?php

declare(strict_types=1);

// PSR-4 autoloader for Flagport\ -> src/, for use without Composer.
spl_autoload_register(static function (string $class): void {
    $prefix = 'Flagport\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $file = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
    if (is_file($file)) {
        require $file;
    }
});
