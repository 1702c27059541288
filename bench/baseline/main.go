// Command baseline is the bare Go baseline of bench/run.sh: a net/http
// server whose only handler writes the bytes of one file, read at start,
// with the headers mailbeacon sends. Whatever mailbeacon costs beyond this
// is its own work: routing, parsing, limits, cache, rendering, logging.
package main

import (
	"flag"
	"log"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "listen `address`")
	file := flag.String("file", "", "`file` whose bytes every request gets")
	flag.Parse()
	body, err := os.ReadFile(*file)
	if err != nil {
		log.Fatal(err)
	}
	length := strconv.Itoa(len(body))
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hd := w.Header()
		hd.Set("Content-Type", "text/xml; charset=utf-8")
		hd.Set("Content-Length", length)
		_, _ = w.Write(body)
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
