"""ROS-free core of dvfo_ros. Nothing under this package may import rclpy."""
