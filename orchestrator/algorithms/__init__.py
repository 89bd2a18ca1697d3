"""The maths and data paths of each method, as pure functions of models, tensors and pairs:
Panacea's training step, SPO's stage margin, MODPO's margin and β, DPO soups' weight
interpolation, SIPO's candidates, Pareto filter and new pairs, reward models' pair scores. No
Ray, no run folders."""
