<?php

/**
 * The page the FPM tests and benchmarks request (tests/php/test_fpm.py, benchmarks/test_php_bridge.py).
 *
 * FastCGI params: FLAGPORT_URL. Query: `mode` (bridge | bare), `user`, `company`, `keys`
 * (comma-separated: ask those flags; empty: all), `prefix` (APCu namespace), `transport`
 * (`auto` or `curl`), `timeout_ms`, `threshold`, `cooldown`, `defaults` (JSON object).
 * Answers JSON with the values, the client's status, the PHP Bucketing predictions for
 * `predict` (key:percentage,...), and the time spent in the bridge (wall clock, and the worker's
 * CPU time: what the bridge costs PHP itself, without the wait for the server).
 */

declare(strict_types=1);

require __DIR__ . '/../../autoload.php';

header('Content-Type: application/json');
$q = $_GET;
$user = (string) ($q['user'] ?? '');
$context = ['targetingKey' => $user, 'company_id' => (int) ($q['company'] ?? 0), 'role' => 'member'];

if (($q['mode'] ?? 'bridge') === 'bare') {
    echo json_encode(['values' => [], 'context' => $context]);
    return;
}

/** CPU seconds this worker has used (user + system), in microseconds. */
function cpu_us(): float
{
    $usage = getrusage();
    return ($usage['ru_utime.tv_sec'] + $usage['ru_stime.tv_sec']) * 1e6 + $usage['ru_utime.tv_usec'] + $usage['ru_stime.tv_usec'];
}

$cpuStarted = cpu_us();
$started = hrtime(true);
$client = new Flagport\Client([
    'url' => (string) ($_SERVER['FLAGPORT_URL'] ?? ''),
    'cache_prefix' => (string) ($q['prefix'] ?? 'flagport'),
    'timeout_ms' => (int) ($q['timeout_ms'] ?? 250),
    'transport' => (string) ($q['transport'] ?? 'auto'),
    'breaker_threshold' => (int) ($q['threshold'] ?? 3),
    'breaker_cooldown' => (float) ($q['cooldown'] ?? 5),
    'defaults' => json_decode((string) ($q['defaults'] ?? '{}'), true) ?: [],
]);
$keys = array_values(array_filter(explode(',', (string) ($q['keys'] ?? ''))));
$values = [];
if ($keys === []) {
    $values = $client->all($context);
} else {
    foreach ($keys as $key) {
        $values[$key] = $client->isEnabled($key, $context);
    }
}
$elapsed = (hrtime(true) - $started) / 1000;
$cpu = cpu_us() - $cpuStarted;

$predicted = [];
foreach (array_filter(explode(',', (string) ($q['predict'] ?? ''))) as $spec) {
    [$key, $percentage] = explode(':', $spec);
    $predicted[$key] = Flagport\Bucketing::included($key, $user, (float) $percentage);
}
echo json_encode([
    'values' => $values,
    'predicted' => $predicted,
    'status' => $client->status(),
    'elapsed_us' => $elapsed,
    'cpu_us' => $cpu,
    'pid' => getmypid(),
], JSON_PRESERVE_ZERO_FRACTION);
