"""Hook: sglang.srt.managers.io_struct.hook_custom_types — lets our hint messages cross SGLang's
msgpack ZMQ channels. Needed in every process that sends or receives them."""

from sglang_agent.patches._version import check_sglang_version


def apply() -> None:
    check_sglang_version()
    from sglang.srt.managers import io_struct

    from sglang_agent.server.messages import AgentHintReqInput, AgentHintReqOutput, AgentStepTick

    io_struct.hook_custom_types(AgentHintReqInput, AgentHintReqOutput, AgentStepTick)
