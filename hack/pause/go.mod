module routing.local/pause

go 1.24
