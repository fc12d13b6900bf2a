// The socket of an HTTP connection, found from the addresses cpp-httplib gives a handler (its Request carries the
// peer's address and port, not the descriptor). Used to notice a client that went away while a non-streamed
// completion was being generated, and to stop reading a request body that is over the limit.
#pragma once
#include <string>

namespace frozenlm::serve {

class PeerSocket {
 public:
  // Finds the descriptor of this process's TCP connection to remote_addr:remote_port on local_port (-1 if none).
  PeerSocket(const std::string& remote_addr, int remote_port, int local_port);
  bool found() const { return fd_ >= 0; }
  // The peer closed the connection (or reset it). False when unknown.
  bool peer_closed() const;
  // Nothing more is read from this connection: the server's next read sees the end, so it closes after the response.
  void stop_reading() const;

 private:
  int fd_ = -1;
};

}  // namespace frozenlm::serve
