<!doctype html>
<html>
<head><meta charset="utf-8"><title>Portal</title></head>
<body><nav id="dropdown">old-dropdown</nav></body>
</html>
