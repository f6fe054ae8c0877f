"""MANO hand model layer (mano), joint orders (joint_orders), skeleton kinematics
(kinematics) and the shipped MANO-format stand-in hand (assets/, generated at development
time by hoi_training.assets.standin_hand).

Import the submodules directly: joint_orders and kinematics need neither torch nor
smplx, so lightweight users (overlay drawing, message building) stay fast to import.
"""
