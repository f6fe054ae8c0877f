"""``hoi_perception_node``: the rclpy lifecycle node, a thin adapter over :mod:`node_logic`.

This module only calls rclpy: it declares the parameters, creates publishers,
subscriptions, the diagnostics timer and the one ``/tf`` publisher, pairs image and
CameraInfo (and depth) with :class:`~hoi_perception.ros.input_sync.ApproximateTimeSync`
and hands every matched set to :class:`~hoi_perception.ros.node_logic.PerceptionNodeLogic`.

It needs rclpy and the message packages only: no tf2_ros or message_filters (neither
is installable from the ROS 2 wheels). TF goes out as ``tf2_msgs/TFMessage`` on ``/tf``
with tf2_ros's broadcaster QoS (reliable, keep last 100), which is all a
TransformBroadcaster does; the own synchroniser also reports the images it had to
discard, which the diagnostics count as lost next to the stamp gaps of the received
images (frames overwritten in the subscription queue or lost in transport).

Lifecycle (``ros2 lifecycle set /hoi_perception <transition>``; with ``autostart``
the node configures and activates itself):

* configure: read the parameters, load the estimator (networks, MANO, object model),
  ``gc.freeze()`` the loaded models, create the publishers. A missing model file or a
  bad parameter fails the transition with an error log naming it.
* activate: subscribe (image + CameraInfo [+ depth], approximate-time pairing) and
  start the diagnostics timer. deactivate undoes that; cleanup releases the estimator.

Every rclpy name the node uses comes through a :class:`RosApi` (or the LifecycleNode
base class), which :func:`load_ros_api` fills from rclpy; tests build the node class
over an in-process stand-in with :func:`build_node_class`, and test_ros_graph.py runs
the installed node on a real ROS 2 graph.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hoi_perception.config import ConfigError
from hoi_perception.ros.input_sync import ApproximateTimeSync, StampGapCounter, message_stamp_ns
from hoi_perception.ros.node_logic import (
    DIAGNOSTICS_OUTPUT,
    FrameOutputs,
    GeneratedMessageTypes,
    LoadedEstimator,
    PerceptionNodeLogic,
    load_estimator,
    publisher_plans,
    subscription_plan,
)
from hoi_perception.ros.params import (
    NodeParams,
    ParameterSpec,
    QosParams,
    load_node_params,
    parameter_specs,
    params_from_values,
)
from hoi_perception.ros_messages import MessageTypes

NODE_NAME = "hoi_perception"
TF_TOPIC = "/tf"
TF_TYPE = "tf2_msgs/msg/TFMessage"
TF_QOS = QosParams(reliability="reliable", depth=100, durability="volatile")  # tf2_ros.DynamicBroadcasterQoS
CONFIG_FILE_PARAMETER = "config_file"
_KIND_NAMES = {"bool": "bool", "integer": "integer", "double": "double (an integer is accepted)",
               "string": "string", "string_array": "string array"}


@dataclass(frozen=True)
class RosApi:
    """The rclpy surface the node uses, gathered in one place so that it can be substituted."""

    init: Callable[..., Any]
    spin: Callable[[Any], Any]
    try_shutdown: Callable[[], Any]
    shutdown_exceptions: tuple[type[BaseException], ...]
    LifecycleNode: type
    TransitionCallbackReturn: Any
    QoSProfile: Callable[..., Any]
    ReliabilityPolicy: Any
    HistoryPolicy: Any
    DurabilityPolicy: Any
    ParameterDescriptor: Callable[..., Any]
    message_types: MessageTypes  # .types[name] builds messages
    message_class: Callable[[str], type]  # the class publishers and subscriptions take
    load_estimator: Callable[[NodeParams, str | None], LoadedEstimator] = load_estimator


def load_ros_api() -> RosApi:
    """The real rclpy (a ROS 2 workspace must be sourced)."""
    try:
        import rclpy
        from rcl_interfaces.msg import ParameterDescriptor
        from rclpy.executors import ExternalShutdownException
        from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    except ImportError as exc:
        raise ImportError(f"hoi_perception_node needs ROS 2 (rclpy): {exc}. Source your ROS 2 installation and "
                          "workspace (source install/setup.bash)") from exc
    types = GeneratedMessageTypes()
    return RosApi(init=rclpy.init, spin=rclpy.spin, try_shutdown=rclpy.try_shutdown,
                  shutdown_exceptions=(KeyboardInterrupt, ExternalShutdownException), LifecycleNode=LifecycleNode,
                  TransitionCallbackReturn=TransitionCallbackReturn, QoSProfile=QoSProfile,
                  ReliabilityPolicy=ReliabilityPolicy, HistoryPolicy=HistoryPolicy, DurabilityPolicy=DurabilityPolicy,
                  ParameterDescriptor=ParameterDescriptor, message_types=types, message_class=types.message_class)


def qos_profile(api: RosApi, qos: QosParams) -> Any:
    """An rclpy QoSProfile (keep-last) from plain settings."""
    reliability = {"best_effort": api.ReliabilityPolicy.BEST_EFFORT, "reliable": api.ReliabilityPolicy.RELIABLE}
    durability = {"volatile": api.DurabilityPolicy.VOLATILE, "transient_local": api.DurabilityPolicy.TRANSIENT_LOCAL}
    return api.QoSProfile(history=api.HistoryPolicy.KEEP_LAST, depth=qos.depth,
                          reliability=reliability[qos.reliability], durability=durability[qos.durability])


if TYPE_CHECKING:
    class _LifecycleNode:
        """The part of rclpy's ``LifecycleNode`` the adapter calls, for the type checker only: at run
        time the adapter is mixed into ``RosApi.LifecycleNode`` (:func:`build_node_class`)."""

        def __init__(self, node_name: str, **kwargs: Any) -> None: ...
        def get_name(self) -> str: ...
        def get_logger(self) -> Any: ...
        def get_clock(self) -> Any: ...
        def declare_parameter(self, *args: Any, **kwargs: Any) -> Any: ...
        def get_parameter(self, name: str) -> Any: ...
        def create_publisher(self, *args: Any, **kwargs: Any) -> Any: ...
        def create_lifecycle_publisher(self, *args: Any, **kwargs: Any) -> Any: ...
        def create_subscription(self, *args: Any, **kwargs: Any) -> Any: ...
        def create_timer(self, *args: Any, **kwargs: Any) -> Any: ...
        def destroy_subscription(self, subscription: Any) -> Any: ...
        def destroy_timer(self, timer: Any) -> Any: ...
        def destroy_lifecycle_publisher(self, publisher: Any) -> Any: ...
        def on_activate(self, state: Any) -> Any: ...
        def on_deactivate(self, state: Any) -> Any: ...
        def on_cleanup(self, state: Any) -> Any: ...
        def on_shutdown(self, state: Any) -> Any: ...
else:
    _LifecycleNode = object


class PerceptionNodeAdapter(_LifecycleNode):
    """The node's behaviour, mixed into the API's LifecycleNode by :func:`build_node_class`."""

    _api: RosApi

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self._logic: PerceptionNodeLogic | None = None
        self._publishers_by_output: dict[str, Any] = {}
        self._subscriptions_by_topic: dict[str, Any] = {}
        self._synchronizer: ApproximateTimeSync | None = None
        self._stamp_gaps = StampGapCounter()
        self._diagnostics_timer: Any = None
        self._input_topic = ""
        self._image_type = ""
        self._tf_publisher: Any = None  # the node's one /tf publisher, created at the first configure
        self._specs = self._declare_node_parameters()

    # ----------------------------------------------------------------- parameters

    def _declare_node_parameters(self) -> list[ParameterSpec]:
        """Declare ``config_file`` and every NodeParams leaf, defaults from the file's ``node:`` section.

        Parameters are dynamically typed for rclpy and checked by NodeParams at configure,
        so ``max_rate_hz: 15`` works as well as ``15.0`` and errors name the parameter.
        """
        descriptor = self._api.ParameterDescriptor(
            description="Perception YAML with node: and estimator: sections; empty = the shipped perception.yaml",
            dynamic_typing=True)
        config_file = self.declare_parameter(CONFIG_FILE_PARAMETER, "", descriptor).value or None
        try:
            defaults = load_node_params(config_file)
        except (ConfigError, OSError) as exc:  # reported again, as a failure, at configure
            self.get_logger().error(f"cannot read the node parameters from the config file: {exc}")
            defaults = NodeParams()
        specs = parameter_specs(defaults)
        for spec in specs:
            self.declare_parameter(spec.name, spec.value, self._api.ParameterDescriptor(
                description=spec.description, additional_constraints=f"type: {_KIND_NAMES[spec.kind]}",
                dynamic_typing=True))
        return specs

    def _config_file(self) -> str | None:
        return self.get_parameter(CONFIG_FILE_PARAMETER).value or None

    def read_params(self) -> NodeParams:
        """The current parameter values as validated NodeParams (ConfigError names a bad one)."""
        values = {spec.name: self.get_parameter(spec.name).value for spec in self._specs}
        return params_from_values(values, "node parameters:")

    # ----------------------------------------------------------------- lifecycle

    def on_configure(self, state: Any) -> Any:
        result = self._api.TransitionCallbackReturn
        try:
            params = self.read_params()
            if params.publish.tf:
                self._create_tf_publisher()
            loaded = self._api.load_estimator(params, self._config_file())
        except Exception as exc:  # noqa: BLE001 - every reason must reach the log, not kill the node
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return result.FAILURE
        # Loaded networks and meshes live as long as the node: keep them out of the
        # garbage collector's scans, which otherwise stall large per-frame messages.
        gc.collect()
        gc.freeze()
        for plan in publisher_plans(params):
            self._publishers_by_output[plan.output] = self.create_lifecycle_publisher(
                self._api.message_class(plan.msgtype), plan.topic, qos_profile(self._api, plan.qos))
        self._logic = PerceptionNodeLogic(
            params, loaded, self._api.message_types, sink=self._publish_outputs, has_subscribers=self._has_subscribers,
            warn=self.get_logger().warning, node_name=self.get_name())
        self.get_logger().info(f"configured: {loaded.description}")
        return result.SUCCESS

    def _create_tf_publisher(self) -> None:
        if self._tf_publisher is None:
            try:
                tf_class = self._api.message_class(TF_TYPE)
            except KeyError as exc:
                raise ConfigError(f"{exc.args[0]}: build tf2_msgs (tools/ros2_jazzy/build_workspace.sh builds it "
                                  "from its definition) or set publish.tf false") from None
            self._tf_publisher = self.create_publisher(tf_class, TF_TOPIC, qos_profile(self._api, TF_QOS))

    def on_activate(self, state: Any) -> Any:
        logic = self._require_logic()
        logic.reset()
        plan = subscription_plan(logic.params)
        qos = qos_profile(self._api, plan.qos)
        topics = [(plan.image_type, plan.image_topic), ("sensor_msgs/msg/CameraInfo", plan.camera_info_topic)]
        if plan.depth_topic:
            topics.append(("sensor_msgs/msg/Image", plan.depth_topic))
        self._stamp_gaps.reset()
        self._synchronizer = ApproximateTimeSync(
            len(topics), plan.queue_size, plan.slop_s, self._on_synchronised,
            on_unmatched=lambda count: logic.record_lost_inputs("unmatched", count))
        for index, (msgtype, topic) in enumerate(topics):
            self._subscriptions_by_topic[topic] = self.create_subscription(
                self._api.message_class(msgtype), topic, lambda msg, index=index: self._on_input(index, msg), qos)
        self._input_topic = plan.image_topic
        self._image_type = plan.image_type
        self._diagnostics_timer = self.create_timer(logic.params.diagnostics_period_s, self._on_diagnostics_timer)
        self.get_logger().info(f"active: {', '.join(topic for _, topic in topics)}")
        return super().on_activate(state)

    def on_deactivate(self, state: Any) -> Any:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: Any) -> Any:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: Any) -> Any:
        self._stop_inputs()
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: Any) -> Any:
        self.get_logger().error("a lifecycle transition raised; releasing everything (back to unconfigured)")
        self._stop_inputs()
        self._release()
        return self._api.TransitionCallbackReturn.SUCCESS

    def _require_logic(self) -> PerceptionNodeLogic:
        if self._logic is None:
            raise RuntimeError("the node is not configured")
        return self._logic

    def _stop_inputs(self) -> None:
        for subscription in self._subscriptions_by_topic.values():
            self.destroy_subscription(subscription)
        self._subscriptions_by_topic = {}
        self._synchronizer = None
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None

    def _release(self) -> None:
        for publisher in self._publishers_by_output.values():
            self.destroy_lifecycle_publisher(publisher)
        self._publishers_by_output = {}
        if self._logic is not None:
            self._logic = None
            gc.unfreeze()  # let the released models be collected
            gc.collect()

    # ----------------------------------------------------------------- callbacks

    def _on_input(self, index: int, message: Any) -> None:
        """Every subscription's callback: count stamp gaps of the images, then pair by stamp."""
        logic, synchronizer = self._logic, self._synchronizer
        if logic is None or synchronizer is None:  # a message already taken when the node was deactivated
            return
        try:
            if index == 0:
                logic.record_lost_inputs("stamp_gap", self._stamp_gaps.add(message_stamp_ns(message)))
            synchronizer.add(index, message)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not take the node down
            self.get_logger().error(f"input message dropped: {type(exc).__name__}: {exc}")

    def _on_synchronised(self, image: Any, camera_info: Any, depth: Any = None) -> None:
        logic = self._logic
        if logic is None:  # a message already queued when the node was deactivated
            return
        logic.on_frame(image, camera_info, depth, image_type=self._image_type,
                       now_ns=self.get_clock().now().nanoseconds)

    def _publish_outputs(self, outputs: FrameOutputs) -> None:
        if outputs.transforms and self._tf_publisher is not None:
            self._tf_publisher.publish(self._api.message_types.types[TF_TYPE](transforms=outputs.transforms))
        for output, messages in outputs.messages.items():
            publisher = self._publishers_by_output[output]
            for message in messages:
                publisher.publish(message)

    def _has_subscribers(self, output: str) -> bool:
        publisher = self._publishers_by_output.get(output)
        return publisher is not None and publisher.get_subscription_count() > 0

    def _on_diagnostics_timer(self) -> None:
        logic = self._logic
        if logic is None:
            return
        try:
            message = logic.diagnostics_msg(self.get_clock().now().nanoseconds, self._input_topic)
            self._publishers_by_output[DIAGNOSTICS_OUTPUT].publish(message)
        except Exception as exc:  # noqa: BLE001 - diagnostics must never take the node down
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}")


def build_node_class(api: RosApi) -> type:
    """The node class over ``api``'s LifecycleNode."""
    return type("PerceptionNode", (PerceptionNodeAdapter, api.LifecycleNode), {"_api": api})


def main(args: list[str] | None = None, api: RosApi | None = None) -> int:
    """Entry point of ``ros2 run hoi_perception hoi_perception_node``."""
    api = api or load_ros_api()
    api.init(args=args)
    node = build_node_class(api)()
    try:
        try:
            autostart = node.read_params().autostart
        except ConfigError as exc:
            node.get_logger().error(str(exc))
            return 1
        if autostart:
            if node.trigger_configure() != api.TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: configure failed (see above); exiting")
                return 1
            if node.trigger_activate() != api.TransitionCallbackReturn.SUCCESS:
                node.get_logger().error("autostart: activate failed; exiting")
                return 1
        api.spin(node)
    except api.shutdown_exceptions:
        pass
    finally:
        node.destroy_node()
        api.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
