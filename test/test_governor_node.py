"""Governor over real DDS: actions change the device state, out-of-table clocks are clamped,
bad parameters are refused with a reason."""
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from rosutil import ros_context, spin_until

pytestmark = pytest.mark.ros


def test_action_changes_device_state_and_is_clamped():
    from dvfo_ros.msg import DeviceState, DvfoAction
    from dvfo_ros.nodes.governor import GovernorNode
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[Parameter("backend", value="sim"),
                                                         Parameter("rate_hz", value=50.0)])
        table = gov.table
        probe = Node("probe", context=ctx)
        states = []
        probe.create_subscription(DeviceState, "dvfo/device_state", states.append, QoSProfile(depth=50))
        pub = probe.create_publisher(DvfoAction, "dvfo/action", QoSProfile(depth=10))
        assert spin_until(ctx, [gov, probe], lambda: len(states) > 0)
        assert states[-1].backend == "sim" and states[-1].profile == "xavier_nx"

        a = DvfoAction()
        a.cpu_freq_hz = table.cpu[0]
        a.gpu_freq_hz = table.gpu[1] + 1          # between two levels -> the lower one
        a.emc_freq_hz = table.emc[-1] * 10        # far above the table -> the top level
        def applied():
            pub.publish(a)
            return any(s.gpu_freq_hz == table.gpu[1] for s in states)
        assert spin_until(ctx, [gov, probe], applied)
        last = [s for s in states if s.gpu_freq_hz == table.gpu[1]][-1]
        assert last.cpu_freq_hz == table.cpu[0]
        assert last.emc_freq_hz == table.emc[-1]
        assert last.error == ""
        assert last.power_w > 0
        gov.destroy_node()
        probe.destroy_node()


def test_invalid_parameter_refused_with_reason():
    from dvfo_ros.nodes.governor import GovernorNode
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[Parameter("backend", value="sim")])
        res = gov.set_parameters([Parameter("thermal_limit_c", value=500.0)])[0]
        assert not res.successful
        assert "thermal_limit_c" in res.reason
        assert gov.get_parameter("thermal_limit_c").value == 85.0
        ok = gov.set_parameters([Parameter("rate_hz", value=20.0)])[0]
        assert ok.successful
        gov.destroy_node()


def test_integer_for_a_float_parameter_is_accepted_and_a_wrong_type_refused():
    """`thermal_limit_c: 80` in a params file is 80.0; a string is refused with a reason, not a crash."""
    from dvfo_ros.nodes.governor import GovernorNode
    with ros_context() as ctx:
        gov = GovernorNode(context=ctx, parameter_overrides=[Parameter("backend", value="sim"),
                                                         Parameter("thermal_limit_c", value=80)])
        assert gov.params["thermal_limit_c"] == 80.0
        res = gov.set_parameters([Parameter("rate_hz", value="fast")])[0]
        assert not res.successful and "rate_hz" in res.reason
        assert gov.set_parameters([Parameter("rate_hz", value=5)])[0].successful
        assert gov.params["rate_hz"] == 5.0
        gov.destroy_node()
