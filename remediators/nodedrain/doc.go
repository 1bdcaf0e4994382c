// Package nodedrain takes sick nodes out of service and gives them back.
// node.cordon marks a node unschedulable; node.drain cordons it and moves
// its pods away through the Eviction API, so PodDisruptionBudgets are
// honoured (a refused eviction is retried until the policy's timeout, then
// the drain fails naming the pods that blocked it — never a forced delete).
// Both undo by uncordoning when the problem clears.
//
// Every node healer cordons carries healer.io/owner (the action's id) and
// healer.io/problems (each problem that needs the node out of service). A
// second problem on a node healer already cordoned joins that list; the
// node is uncordoned only when the last of its problems clears, and a node
// a human cordoned or uncordoned is left as the human left it.
package nodedrain
