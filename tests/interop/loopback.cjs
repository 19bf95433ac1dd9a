// Preload that keeps Node servers on the loopback interface.
//
// Some peers (server-everything's `streamableHttp` and `sse` modes) call `app.listen(PORT)`
// without a host, which binds every interface. Loading this file first makes any such
// listen() bind 127.0.0.1 instead; a listen() that names a host is left alone.
//
//   NODE_OPTIONS="--require $PWD/tests/interop/loopback.cjs" PORT=0 \
//     tests/interop/node_modules/.bin/mcp-server-everything streamableHttp
//
// With PORT=0 the kernel picks a free port; the actual port is printed to stderr as
// `airlock-interop: listening on 127.0.0.1:PORT` (server-everything's own message repeats
// the requested port, 0, so read this line instead).
"use strict";
const net = require("node:net");

const HOST = "127.0.0.1";
const originalListen = net.Server.prototype.listen;

function isPort(value) {
  return typeof value === "number" || (typeof value === "string" && /^\d+$/.test(value));
}

net.Server.prototype.listen = function (...args) {
  if (args.length === 0 || typeof args[0] === "function") {
    // listen() / listen(cb): a random port on every interface.
    args.unshift(0, HOST);
  } else if (isPort(args[0]) && typeof args[1] !== "string") {
    // listen(port[, backlog][, cb]) without a host.
    args.splice(1, 0, HOST);
  } else if (args[0] && typeof args[0] === "object" && !args[0].path && !args[0].host && !args[0].fd
    && !args[0]._handle && !args[0].handle) {
    // listen({port}) without a host.
    args[0] = { ...args[0], host: HOST };
  }
  this.once("listening", () => {
    const addr = this.address();
    if (addr && typeof addr === "object") {
      process.stderr.write(`airlock-interop: listening on ${addr.address}:${addr.port}\n`);
    }
  });
  return originalListen.apply(this, args);
};
