<!doctype html>
<html>
<head><meta charset="utf-8"><title>Portal</title></head>
<body>
<nav id="dropdown">@feature('ui-improvements.dropdown-fixes')@if ($broken)@php(throw new RuntimeException('the new dropdown broke'))@endif new-dropdown @else old-dropdown @endfeature</nav>
</body>
</html>
