<?php
// A backend job that reports its progress to one browser tab through
// Switchboard's push API, with file_get_contents and a stream context (no
// extension needed). Stops when the user cancels (409) or closes the tab (404).
//
//   php examples/backend/progress.php CLIENT_ID [JOB]
//
// Environment: SWITCHBOARD_URL (default http://127.0.0.1:8080),
// SWITCHBOARD_PUSH_TOKEN (if the server requires one), STEPS (default 10),
// STEP_DELAY in seconds (default 0.5).
// Exit status: 0 done, 2 the browser is gone, 3 cancelled by the user, 1 error.

/** POSTs one push; returns [HTTP status, decoded answer]. */
function push(string $url, string $token, array $payload): array
{
    $headers = "Content-Type: application/json\r\n";
    if ($token !== '') {
        $headers .= "Authorization: Bearer $token\r\n";
    }
    $context = stream_context_create(['http' => [
        'method' => 'POST',
        'header' => $headers,
        'content' => json_encode($payload),
        'ignore_errors' => true,   // read the body of 4xx answers too
        'timeout' => 10,
    ]]);
    $body = @file_get_contents($url, false, $context);
    if ($body === false) {
        return [0, ['error' => 'cannot reach ' . $url]];
    }
    preg_match('{HTTP/\S+ (\d{3})}', $http_response_header[0] ?? '', $match);
    return [(int) ($match[1] ?? 0), json_decode($body, true) ?? []];
}

$client = $argv[1] ?? null;
if ($client === null) {
    fwrite(STDERR, "usage: progress.php CLIENT_ID [JOB]\n");
    exit(1);
}
$job = $argv[2] ?? 'job-' . getmypid();
$url = (getenv('SWITCHBOARD_URL') ?: 'http://127.0.0.1:8080') . '/_/push';
$token = getenv('SWITCHBOARD_PUSH_TOKEN') ?: '';
$steps = (int) (getenv('STEPS') ?: 10);
$delay = (float) (getenv('STEP_DELAY') ?: 0.5);

for ($i = 0; $i <= $steps; $i++) {
    $progress = intdiv($i * 100, $steps);
    $message = ['job' => $job, 'progress' => $progress, 'text' => "step $i of $steps"];
    [$status, $answer] = push($url, $token, ['to' => ['client' => $client], 'message' => $message]);
    if ($status === 404) {
        echo "the browser is gone; stopping job $job at $progress%\n";
        exit(2);
    }
    if ($status === 409) {
        echo "the user cancelled job $job at $progress%\n";
        exit(3);
    }
    if ($status !== 200) {
        fwrite(STDERR, "push failed with HTTP $status: " . ($answer['error'] ?? '') . "\n");
        exit(1);
    }
    if ($i < $steps) {
        usleep((int) ($delay * 1e6));
    }
}
echo "job $job done\n";
