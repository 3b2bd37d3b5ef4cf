<?php

/**
 * The benchmarks' probe (benchmarks/test_php_outcomes.py): the busy time laravel.php left in
 * APCu for its last request with FLAGPORT_BENCH_SEQ, as `[seq, nanoseconds]` (or null),
 * read from another worker of the pool once that request has fully ended.
 */

declare(strict_types=1);

header('Content-Type: application/json');
$busy = function_exists('apcu_fetch') ? apcu_fetch('fp-bench:busy') : false;
echo json_encode($busy === false ? null : $busy);
