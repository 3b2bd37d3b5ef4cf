<?php

/**
 * The floor under the PHP bridge's wait (benchmarks/test_php_bridge.py): the same persistent
 * Unix-socket transport (`SocketTransport`) sends each request once to Flagport's OFREP bulk
 * and once to the framework-free ASGI echo (`benchmarks/bare_app.py:raw_app`) on the same
 * runner (granian), in alternating order, a new user each. The echo's round trip is what
 * any Python app served by that runner costs a PHP request before it does anything; the
 * paired difference is what Flagport adds to it. The decode of Flagport's answer (what the
 * bridge does next) is timed apart. Prints JSON, times in µs.
 *
 * Usage: php php_floor.php <php-bridge/autoload.php> <flagport socket> <echo socket> <pairs>
 */

declare(strict_types=1);

require $argv[1];

$targets = [
    'flagport' => [new Flagport\SocketTransport($argv[2], 50, 2000), '/ofrep/v1/evaluate/flags'],
    'echo' => [new Flagport\SocketTransport($argv[3], 50, 2000), '/bare'],
];
$times = ['flagport' => [], 'echo' => []];
$added = [];
$decode = [];
for ($i = 0; $i < (int) $argv[4]; $i++) {
    $body = '{"context":{"targetingKey":"floor-' . $i . '-' . mt_rand() . '","company_id":7,"role":"member"}}';
    foreach ($i % 2 === 0 ? ['flagport', 'echo'] : ['echo', 'flagport'] as $name) {
        [$transport, $path] = $targets[$name];
        $started = hrtime(true);
        $answer = $transport->request('POST', $path, $body);
        $times[$name][] = (hrtime(true) - $started) / 1000;
        if ($answer->status !== 200) {
            fwrite(STDERR, "$name: HTTP {$answer->status}\n");
            exit(1);
        }
        if ($name === 'flagport') {
            $started = hrtime(true);
            $flags = json_decode($answer->body, true, 32, JSON_THROW_ON_ERROR)['flags'];
            $decode[] = (hrtime(true) - $started) / 1000;
            $size = strlen($answer->body);
            $count = count($flags);
        }
    }
    $added[] = end($times['flagport']) - end($times['echo']);
}
$quantile = static function (array $values, float $q): float {
    sort($values);
    return $values[min(count($values) - 1, (int) ($q * count($values)))];
};
echo json_encode([
    'flagport_p50' => $quantile($times['flagport'], 0.5),
    'flagport_p90' => $quantile($times['flagport'], 0.9),
    'echo_p50' => $quantile($times['echo'], 0.5),
    'echo_p90' => $quantile($times['echo'], 0.9),
    'added_p50' => $quantile($added, 0.5),
    'decode_p50' => $quantile($decode, 0.5),
    'answer_bytes' => $size ?? 0,
    'flags' => $count ?? 0,
    'pairs' => count($added),
]);
