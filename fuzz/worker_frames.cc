// What a worker writes on fd 3, as the daemon decodes it (worker::FrameDecoder): a hostile
// function controls every byte. The stream arrives in pieces whose sizes the input chooses.
// Checked: every frame decoded encodes back to exactly the bytes it came from, the decoder never
// holds more than it was given, and once it reports an error the stream is given up, as
// worker::Instance gives up the worker.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdlib>
#include <string>

#include "ember/worker/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  ember::worker::FrameDecoder decoder;
  std::string fed;      // every byte given to the decoder
  std::string decoded;  // the frames it returned, encoded again
  while (in.remaining_bytes() > 0) {
    const size_t piece = in.ConsumeIntegralInRange<size_t>(1, 256);  // one byte of input
    const std::string bytes = in.ConsumeBytesAsString(piece);
    decoder.feed(bytes);
    fed += bytes;
    for (;;) {
      auto frame = decoder.next();
      if (!frame) return 0;  // a broken stream: the worker is killed, nothing more is read
      if (!*frame) break;
      ember::worker::encode(**frame, decoded);
      if ((*frame)->meta.size() > ember::worker::kMaxMetaBytes) std::abort();
    }
    if (decoded.size() + decoder.buffered() != fed.size()) std::abort();
    if (fed.compare(0, decoded.size(), decoded) != 0) std::abort();
  }
  return 0;
}
