"""python -m meteor_tf.serve — serve an exported model on TF Serving's REST and gRPC predict APIs, without TF Serving.

    python -m meteor_tf.serve --model=savedmodels/meteor                       # newest version, 127.0.0.1:8501/8500
    python -m meteor_tf.serve --model=savedmodels/meteor/3 --host=0.0.0.0 --port=8501 --grpc_port=0

    curl -s http://127.0.0.1:8501/v1/models/meteor
    curl -s -X POST http://127.0.0.1:8501/v1/models/meteor:predict \\
         -d "{\\"instances\\": [{\\"b64\\": \\"$(base64 -w0 capture.jpg)\\"}]}"

See meteor_tf.serving.server for the request and answer formats, the size limit and the error answers.
"""

from __future__ import annotations

from absl import flags

from meteor_tf.cli import _common

# A FlagValues of its own: importing this module beside the other CLIs (which have --model, --threshold, --overwrite,
# --batch_size of their own) cannot collide, whatever the import order.
FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, "Exported model: savedmodels/NAME (serves its newest version) or a version dir "
                    "savedmodels/NAME/VERSION.", flag_values=FLAGS)
flags.DEFINE_string("name", "meteor", "Model name in the URLs (/v1/models/NAME:predict) and gRPC model_spec.name.",
                    flag_values=FLAGS)
flags.DEFINE_string("host", "127.0.0.1", "Address to listen on. The server has no authentication: only use "
                    "0.0.0.0 on a network you trust.", flag_values=FLAGS)
flags.DEFINE_integer("port", 8501, "REST port (TF Serving's default 8501).", lower_bound=1, upper_bound=65535,
                     flag_values=FLAGS)
flags.DEFINE_integer("grpc_port", 8500, "gRPC port for TF Serving's PredictionService (TF Serving's default 8500); "
                     "0 turns gRPC off.", lower_bound=0, upper_bound=65535, flag_values=FLAGS)
flags.DEFINE_integer("max_request_bytes", 32 * 2**20, "Largest request body (REST) or message (gRPC) accepted, in "
                     "bytes; larger ones are refused (HTTP 413 / RESOURCE_EXHAUSTED).", lower_bound=1, flag_values=FLAGS)


def main(argv) -> int:
    _common.no_positional_args(argv)
    if not FLAGS.model:
        return _common.bad_input("--model is required (e.g. --model=savedmodels/meteor)")
    _common.setup_logging()
    from meteor_tf.serving import server

    try:
        server.serve(FLAGS.model, name=FLAGS.name, host=FLAGS.host, port=FLAGS.port, grpc_port=FLAGS.grpc_port,
                     max_request_bytes=FLAGS.max_request_bytes)
    except (OSError, ValueError) as e:  # no model / no version / port taken / bad flag value: no traceback
        return _common.bad_input(e)
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-serve`


if __name__ == "__main__":
    run()
