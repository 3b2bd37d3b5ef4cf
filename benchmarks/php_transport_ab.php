<?php

/**
 * Paired A/B of the PHP bridge's two transports on one Unix socket (benchmarks/test_php_bridge.py).
 *
 * Each pair sends the same bulk call (a new user) once through `SocketTransport` (the
 * persistent connection) and once through `CurlTransport` with a new handle and connection,
 * as each FPM request makes, in alternating order, so both see the same machine. Prints JSON:
 * p50/p90 of each (µs) and the p50 of the paired differences (curl minus socket).
 *
 * Usage: php php_transport_ab.php <php-bridge/autoload.php> <socket path> <pairs>
 */

declare(strict_types=1);

require $argv[1];

$socket = $argv[2];
$times = ['socket' => [], 'curl' => []];
$saved = [];
for ($i = 0; $i < (int) $argv[3]; $i++) {
    $body = '{"context":{"targetingKey":"ab-' . $i . '-' . mt_rand() . '","company_id":7,"role":"member"}}';
    foreach ($i % 2 === 0 ? ['socket', 'curl'] : ['curl', 'socket'] as $kind) {
        $transport = $kind === 'socket'
            ? new Flagport\SocketTransport($socket, 50, 2000)
            : new Flagport\CurlTransport('unix://' . $socket, 50, 2000);
        $started = hrtime(true);
        $answer = $transport->request('POST', '/ofrep/v1/evaluate/flags', $body);
        $times[$kind][] = (hrtime(true) - $started) / 1000;
        Flagport\CurlTransport::closeAll();
        if ($answer->status !== 200) {
            fwrite(STDERR, "$kind: HTTP {$answer->status}\n");
            exit(1);
        }
    }
    $saved[] = end($times['curl']) - end($times['socket']);
}
$quantile = static function (array $values, float $q): float {
    sort($values);
    return $values[min(count($values) - 1, (int) ($q * count($values)))];
};
echo json_encode([
    'socket_p50' => $quantile($times['socket'], 0.5),
    'socket_p90' => $quantile($times['socket'], 0.9),
    'curl_p50' => $quantile($times['curl'], 0.5),
    'curl_p90' => $quantile($times['curl'], 0.9),
    'saved_p50' => $quantile($saved, 0.5),
    'pairs' => count($saved),
]);
