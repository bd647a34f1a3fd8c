"""The controller: kopf registrations, runtime, observe, work queue, apply, the gate loop, leader election."""
