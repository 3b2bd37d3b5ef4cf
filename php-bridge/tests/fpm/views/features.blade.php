<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>Portal</title>
@flagportScript
</head>
<body>
<nav id="dropdown">@feature('ui-improvements.dropdown-fixes') new-dropdown @else old-dropdown @endfeature</nav>
<p id="after-script">rendered after the script</p>
</body>
</html>
