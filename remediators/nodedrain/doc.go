// Package nodedrain takes sick nodes out of service and gives them back:
// node.cordon marks a node unschedulable (and, as its undo, uncordons it
// when the problem clears). Every node healer cordons carries the
// annotation healer.io/owner with the action's id; healer only ever undoes
// what it still owns, so a human's cordon or uncordon is never overridden.
package nodedrain
